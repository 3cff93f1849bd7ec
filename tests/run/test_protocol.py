"""Messages between master and workers: every one survives the wire; installs are compared before unpickling."""

from __future__ import annotations

import pickle

import pytest

from hpc_hpo import __version__
from hpc_hpo.config import parse_config
from hpc_hpo.run.protocol import (
    PROTOCOL_VERSION,
    Bye,
    Epoch,
    Hello,
    Interrupted,
    Join,
    Refresh,
    Result,
    Setup,
    Stop,
    Suggested,
    Task,
    Update,
    Verdict,
    decode,
    encode,
    mismatch,
    this_install,
)
from hpc_hpo.trials.devices import Binding, local_place

CONFIG = parse_config({"experiment": {"objective": "m:f", "seed": 3},
                       "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                       "phase": [{"strategy": "random", "trials": 2}]})

MESSAGES = [
    Join.of(local_place(3)),
    Setup.of(CONFIG, Binding(3, gpus=("GPU-8f6c2a1e-3d5b-4c7a-9e21-0b1c2d3e4f50",))),
    Hello(3, "node07", 1234),
    Hello(3, "node07", 1234, error="experiment.objective: cannot import"),
    Task(7, {"x": 0.5}, 1, "random"),
    Task(8, None, 2, "bayes", ([({"x": 0.5}, 1.0)], [{"x": 0.25}])),
    Suggested(8, {"x": 0.75}, 0.05),
    Refresh(8),
    Update(8, ([({"x": 0.5}, 1.0)], [{"x": 0.75}], 0)),
    Epoch(7, 2, {"loss": 0.5}, 1.0e9),
    Result(7, 0.5, {"acc": 0.9}, "", 1.0, 2.0, "done", 812.5),
    Result(9, None, {}, "TrialProcessStartTimeout: ...", 1.0, 2.0, "failed", 0.0, "its trial process ..."),
    Stop(3),
    Interrupted(15),
    Bye(3),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_wire(message):
    tag, payload = encode(message)
    assert tag == type(message).TAG
    assert decode(tag, pickle.loads(pickle.dumps(payload))) == message  # MPI pickles the payload tuple


def test_every_message_has_its_own_tag():
    tags = [cls.TAG for cls in (Join, Setup, Hello, Task, Suggested, Refresh, Update, Result, Epoch, Verdict, Stop,
                                Interrupted, Bye)]
    assert len(set(tags)) == len(tags)
    with pytest.raises(ValueError, match="unknown message tag 99"):
        decode(99, ())


def test_join_setup_and_stop_keep_their_tags_and_first_fields_for_every_future_version():
    """What a rank of another install must always be able to read (see the protocol's docstring)."""
    assert (Join.TAG, Join._fields[:4]) == (10, ("version", "protocol", "rank", "host"))
    assert (Setup.TAG, Setup._fields[:2]) == (1, ("version", "protocol"))
    assert (Stop.TAG, Stop._fields[:1]) == (5, ("exit_code",))
    # A later version may add fields at the end of these three: a rank reads the ones it knows.
    assert decode(Stop.TAG, (2, "bad input", "a field from the future")) == Stop(2, "bad input")
    assert decode(Join.TAG, ("9.9", 99, 3, "node07", b"", "more"))[:4] == ("9.9", 99, 3, "node07")


def test_setup_and_join_carry_the_install_and_unpack_what_they_pickled():
    setup = Setup.of(CONFIG, Binding(2, threads=4))
    assert (setup.version, setup.protocol) == (__version__, PROTOCOL_VERSION) == this_install()
    config, binding = setup.unpack()
    assert config == CONFIG and binding.threads == 4
    join = Join.of(local_place(2))
    assert (join.rank, join.host) == (2, local_place(2).host) and join.unpack() == local_place(2)


def test_a_setup_body_from_another_install_is_never_unpickled():
    """Only bytes travel: a body whose classes this install lacks decodes as a message all the same."""
    other = Setup("0.0.0+other", PROTOCOL_VERSION + 1, b"\x80\x04not a pickle this install could load")
    tag, payload = encode(other)
    assert decode(tag, pickle.loads(pickle.dumps(payload))) == other


def test_a_mismatch_names_the_rank_its_host_and_both_installs():
    assert mismatch(*this_install(), 2, "node07") == ""
    assert mismatch("0.0.1", 3, 2, "node07") == (
        f"rank 2 on node07 runs hpc_hpo 0.0.1 (protocol 3) but the master runs {__version__} "
        f"(protocol {PROTOCOL_VERSION}); install one version everywhere")
