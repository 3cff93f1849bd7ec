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


def test_a_task_that_cannot_carry_everything_carries_the_last_and_the_best_of_the_rest():
    log = ObservationLog(best=4)
    values = [float((7 * i) % 50) for i in range(50)]  # the lowest (best): 0 at 0, 1 at 43, 2 at 36, 3 at 29, ...
    for i, value in enumerate(values):
        log.append(observation(i), value)
    log.append(observation(50), None)  # a failed trial has no score
    assert len(log.since(10, limit=100)) == 41  # within the limit: all of it
    packed = list(log.since(10, limit=8))
    # the best kept (0 at 0, 1 at 43, 2 at 36, 3 at 29) that lie before the last half (10 .. 46), at most 4 of them,
    # in their order, then the last ones to fill the limit
    assert packed == [observation(29), observation(36), observation(43)] + [observation(i) for i in range(46, 51)]
    # More of the best left out than room for them: the best of those (1 at 43, 2 at 36 of 15, 22, 29, 36, 43).
    log = ObservationLog(best=6)
    for i, value in enumerate(values):
        log.append(observation(i), value)
    log.append(observation(50), None)
    assert list(log.since(10, limit=4)) == [observation(36), observation(43), observation(49), observation(50)]
