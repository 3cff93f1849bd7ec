"""The observation history as the master sends it: pickled once each, the unseen part whole and in order."""

from __future__ import annotations

import pickle

from hpc_hpo.run.observations import BLOCK, ObservationLog, Packed


def observation(i: int) -> tuple:
    return ({"x": i / 1000, "c": "ab"[i % 2]}, None if i % 7 == 0 else float(i), (0.5 * i,) if i % 3 else ())


def test_the_part_after_any_position_comes_back_whole_and_in_order_across_block_edges():
    log = ObservationLog()
    everything = [observation(i) for i in range(3 * BLOCK + 5)]
    for i, item in enumerate(everything):
        log.append(item)
        for seen in {0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, i, i + 1}:
            if seen <= i + 1:
                assert list(log.since(seen)) == everything[seen:i + 1], (seen, i)
    assert len(log) == len(everything) and len(log.since(len(log))) == 0


def test_packed_observations_travel_as_their_bytes_and_arrive_as_the_tuples():
    log = ObservationLog()
    for i in range(2 * BLOCK + 3):
        log.append(observation(i))
    packed = log.since(BLOCK - 2)
    wire = pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(wire) < len(packed.blob) + 200  # the blob, not the tuples pickled again
    arrived = pickle.loads(wire)
    assert isinstance(arrived, Packed) and len(arrived) == BLOCK + 5
    assert arrived[0] == observation(BLOCK - 2) and list(arrived) == [observation(i) for i in range(BLOCK - 2, 2 * BLOCK + 3)]
