"""Stop signals: the first asks the rank to stop (and ends an inline trial), the second ends it at once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from hpc_hpo.errors import TrialAbandoned
from hpc_hpo.run.signals import STOP_SIGNALS, StopRequest


@pytest.fixture
def installed():
    """A StopRequest installed in this process; the previous handlers are put back after the test."""
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    seconds: list[int] = []
    request = StopRequest(on_second=seconds.append).install()
    yield request, seconds
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # Python runs the handler at the next bytecode boundary of the main thread


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_the_first_signal_is_a_request_to_stop(installed, signum):
    request, seconds = installed
    assert not request.requested and request.name == ""
    deliver(signum)
    assert request.requested and request.signum == signum and request.name == signal.Signals(signum).name
    assert seconds == []


def test_the_second_signal_calls_on_second_and_keeps_the_first_as_the_reason(installed):
    request, seconds = installed
    deliver(signal.SIGUSR1)
    deliver(signal.SIGTERM)
    assert seconds == [signal.SIGTERM] and request.name == "SIGUSR1"


def test_a_signal_during_an_inline_trial_ends_the_trial_once(installed):
    request, _ = installed
    request.in_inline_trial = True
    with pytest.raises(TrialAbandoned):
        deliver(signal.SIGTERM)
        time.sleep(5)  # the trial: interrupted long before this ends
    assert not request.in_inline_trial  # so the clean-up after it is not interrupted again


def test_trial_abandoned_passes_through_an_objectives_except_exception():
    def objective():
        try:
            raise TrialAbandoned
        except Exception:  # noqa: BLE001 - what careless objectives do
            return "swallowed"

    with pytest.raises(TrialAbandoned):
        objective()
