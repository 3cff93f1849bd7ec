"""The worker driver: turns the master's messages into trials and results.

:class:`Worker` holds the logic (Join first; Setup -> Hello, Task -> [Suggested] -> [Epoch [<- Verdict]...] -> Result) and replies
through the ``send`` it is given, so it serves both the MPI loop in :func:`run_worker` and
the one-process run, where :class:`hpc_hpo.run.comm.LocalComm` hands it messages directly.
The Gaussian-process code is imported during set-up when the experiment has a phase whose
points are chosen on the workers, or a pbt phase that explores with PB2 (all workers import it at
once, before the first trial, rather than one after another on their first such task), and never
otherwise. A pbt segment (``Task.segment``) gets its checkpoint directories in the trial context;
the worker checks the one it restores before the objective runs and the one it saves after.

At set-up the worker applies its device binding (GPUs, threads) to its environment before
anything can import TensorFlow, then starts its executor. A rank that is a non-leading
member of a GPU group (``gpus_per_trial > 1``), or a spare, loads nothing and only waits
for Stop. So does a worker that *retired*: its trial process failed to start
``MAX_START_FAILURES`` times in a row (a sick node); it says so with the last result, and the
search goes on with the other workers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import EXIT_INTERRUPTED, EXIT_RESUMABLE, CheckpointError, ObjectiveImportError, StartupTimeoutError, TrialAbandoned
from ..results import checkpoints
from ..results.records import DONE, FAILED, PRUNED
from ..search.strategies import STRATEGIES
from ..trials.devices import Binding, Place, apply_binding, here
from ..trials.executor import ABANDON_POLL, InlineExecutor, ProcessExecutor, choose_executor
from ..trials.objective import TrialContext
from .comm import MASTER, Backoff, Comm
from .options import Ended
from .protocol import (
    Bye,
    Epoch,
    Hello,
    Interrupted,
    Join,
    Message,
    Refresh,
    Result,
    Setup,
    Stop,
    Suggested,
    Task,
    Update,
    Verdict,
    this_install,
)
from .signals import StopRequest

log = logging.getLogger(__name__)

#: A worker whose trial process fails to start this many times in a row takes no more trials.
MAX_START_FAILURES = 3
#: Seconds a trial waits at a rung for the stopping rule's verdict before it goes on without one.
VERDICT_TIMEOUT = 30.0
#: Look-ahead with a refresh: the worker asks for what it has not seen this long, plus its last step's time, before
#: its trial is expected to end (as long as its last one); it wakes at that moment, then asks ``abandon`` every
#: UPDATE_POLL for the master's answer (due within milliseconds), for at most UPDATE_WAIT, then every REFRESH_POLL.
REFRESH_MARGIN = 0.03
REFRESH_POLL = 0.02
UPDATE_POLL = 0.002
UPDATE_WAIT = 0.1


class Worker:
    """One worker's state: the experiment, the executor that runs trials, its Bayesian replica."""

    def __init__(self, rank: int, send: Callable[[Message], None], host: str | None = None):
        self.rank = rank
        self.send = send
        self.host = host or socket.gethostname()
        self.config = None
        self.binding = Binding(rank)
        self.executor: InlineExecutor | ProcessExecutor | None = None
        self.retired = ""  # why this worker takes no more trials ("" while it does)
        self._suggester = None
        self._rng: np.random.Generator | None = None
        #: Set by the driver: the process's stop request, and what a trial in a child asks to know
        #: whether the job is ending (a signal, or the master's Stop).
        self.stop_request: StopRequest | None = None
        self.abandon: Callable[[], bool] | None = None
        self._verdicts: dict[int, bool] = {}  # trial -> the stopping rule's last verdict, not yet taken
        self._lookahead: threading.Thread | None = None  # preparing the next Bayesian step while a trial runs
        #: Set by the MPI driver, which asks ``abandon`` while a trial runs in a child: the look-ahead can then ask
        #: the master for the latest results shortly before the trial ends (:meth:`refresh`), not only use the task's.
        self.can_refresh = False
        self._refresh: tuple[float, int, dict] | None = None  # (when, trial id, phase options): the Refresh to send
        self._refreshed: dict | None = None  # the phase options of the Refresh sent, until its Update comes
        self._update_due = 0.0  # until when the Update is looked for every UPDATE_POLL
        self._last_trial_seconds: float | None = None  # this worker's last trial, start to end
        self._last_step_seconds = 0.0  # its last whole Bayesian step (or prepared one)

    def join(self, place: Place) -> None:
        """Tell the master this rank has started, which install it runs and where: the first message."""
        self.send(Join.of(place))

    def handle(self, message: Message) -> None:
        """Act on a message from the master; replies go out through ``send``."""
        if isinstance(message, Verdict):
            self._verdicts[message.trial_id] = message.stop
        elif isinstance(message, Update):
            self._prepare_from(message)
        elif isinstance(message, Task):
            self.run_task(message)
        elif isinstance(message, Setup):
            self.send(self.setup(message))
        elif isinstance(message, Stop):
            self.stop(message)
        else:
            raise TypeError(f"rank {self.rank}: unexpected message {message!r}")

    def setup(self, setup: Setup) -> Hello:
        """Load the objective; report any failure in the Hello instead of crashing.

        The master compared the installs when this rank joined; a Setup from another install
        (a master that did not) is not unpacked at all.
        """
        if (setup.version, setup.protocol) != this_install():
            return Hello(self.rank, self.host, os.getpid(), error=(
                f"rank {self.rank} on {self.host} runs hpc_hpo {this_install()[0]} (protocol {this_install()[1]}) but "
                f"the master runs {setup.version} (protocol {setup.protocol}); install one version everywhere"))
        self.config, binding = setup.unpack()
        if binding is not None:
            self.binding = binding
        apply_binding(self.binding)
        if not self.binding.takes_trials:
            return Hello(self.rank, self.host, os.getpid())
        error = ""
        try:
            self.executor = self._make_executor()
        except StartupTimeoutError:
            error = (f"workers.startup_timeout: worker rank {self.rank} ({self.host}) did not finish importing the "
                     f"objective within {self.config.workers.startup_timeout:g} s")  # as the master would say
        except ObjectiveImportError as exc:
            error = f"{exc} on rank {self.rank} ({self.host})"
        if not error and any(STRATEGIES[phase.strategy].suggests_on_worker for phase in self.config.phases):
            self._suggester = self._make_suggester()
        if not error and any(phase.options.get("explore") == "pb2" for phase in self.config.phases):
            from ..search.gp import pb2  # noqa: F401 - imported now, not in a member's first PB2 step
        return Hello(self.rank, self.host, os.getpid(), error=error)

    def stop(self, message: Stop) -> None:
        """The master's Stop: end the executor; after a shutdown (exit code 3) say Bye, so the master may end."""
        self.close()
        if message.exit_code == EXIT_RESUMABLE:
            self.send(Bye(self.rank))

    def _make_executor(self) -> InlineExecutor | ProcessExecutor:
        experiment, workers = self.config.experiment, self.config.workers
        kind = choose_executor(workers.executor, experiment.objective, self.config.base_dir)
        log.debug("runs trials %s", "in a child process" if kind == "process" else "inline")
        if kind == "inline":
            return InlineExecutor(experiment.objective, self.config.base_dir)
        return ProcessExecutor(experiment.objective, self.config.base_dir, trial_timeout=workers.trial_timeout,
                               max_trials_per_process=workers.max_trials_per_process,
                               max_process_memory_mb=workers.max_process_memory_mb,
                               startup_timeout=workers.startup_timeout)

    def run_task(self, task: Task) -> None:
        """Run one trial and send its Result; a trial handed out just after a stop signal is not started
        (:class:`TrialAbandoned`: it runs on resume), so Ctrl-C between two trials never waits for a third."""
        if self.stop_request is not None and self.stop_request.requested:
            raise TrialAbandoned
        self._refreshed = None  # a Refresh the master did not answer (its phase ended) is not answered later
        params = task.params if task.suggest is None else self.choose(task)
        options = self.config.phases[task.phase - 1].options
        if task.suggest is not None and not task.segment and options.get("lookahead", False):
            self._look_ahead(task, params)
        experiment, stopping = self.config.experiment, self.config.stopping
        context = TrialContext(
            trial_id=task.trial_id, params=params, rank=self.rank, host=self.host, phase=task.phase,
            strategy=task.strategy, experiment=experiment.name, experiment_seed=experiment.seed,
            workdir_root=experiment.workdir, gpus=self.binding.gpus,
            max_epochs=stopping.max_epochs if stopping.active else None,
            end_epoch=stopping.max_epochs if stopping.active else None,
        )
        if task.segment:
            context = self._segment_context(task, context)
            if context.restore_from is not None and not checkpoints.usable(Path(context.restore_from)):
                now = time.time()
                self.send(Result(task.trial_id, None, {}, (
                    f"CheckpointError: the checkpoint of trial {task.segment[1]} that member {task.segment[0]} "
                    f"restores is missing or empty ({context.restore_from}); the member goes back to its last good "
                    f"checkpoint (rank {self.rank} on {self.host})"), now, now, FAILED, bad_checkpoint=True))
                return
            checkpoints.prepare(Path(context.checkpoint_dir))
        trial_id, send, rungs = task.trial_id, self.send, task.rungs
        self._verdicts.pop(trial_id, None)
        trained = 0  # epochs reported: the last reported epoch + 1
        next_rung = 0  # index of the first rung of ``rungs`` not yet crossed
        pruned = False

        def report(epoch: int, metrics: dict) -> bool:
            """Send the epoch; after a rung (with the rule's metric) wait for the verdict. True: stop."""
            nonlocal trained, next_rung, pruned
            trained = max(trained, epoch + 1)
            send(Epoch(trial_id, epoch, metrics, time.time()))
            if pruned or next_rung >= len(rungs) or epoch + 1 < rungs[next_rung] or stopping.metric not in metrics:
                return pruned
            while next_rung < len(rungs) and epoch + 1 >= rungs[next_rung]:
                next_rung += 1
            pruned = self.await_verdict(trial_id, epoch)
            return pruned

        t_start = time.time()
        inline = isinstance(self.executor, InlineExecutor) and self.stop_request is not None
        if inline:
            self.stop_request.in_inline_trial = True
        try:
            outcome = self.executor.run(dict(params), context, report, self.abandon)
        finally:
            if inline:
                self.stop_request.in_inline_trial = False
            self._refresh = None  # the trial ended before the moment to ask: the next step is done whole
            if isinstance(self.executor, ProcessExecutor):
                self.executor.abandon_poll = ABANDON_POLL
        t_end = time.time()
        if isinstance(self.executor, ProcessExecutor) and self.executor.started is not None:
            t_start = self.executor.started  # not before its child had it: a child still loading is not trial time
        self._last_trial_seconds = t_end - t_start
        log.debug("trial %d %s in %.3fs", task.trial_id, outcome.status, t_end - t_start)
        failures = getattr(self.executor, "start_failures", 0)
        if failures >= MAX_START_FAILURES:
            self.retired = (f"its trial process failed to start {failures} times in a row (last: "
                            f"{outcome.error.splitlines()[0]})")
            log.warning("retiring: %s", self.retired)
        status = PRUNED if pruned and outcome.status == DONE else outcome.status
        value, error, saved_mb = outcome.value, outcome.error, 0.0
        if task.segment:
            saved = Path(context.checkpoint_dir)
            saved_mb = checkpoints.size_mb(saved)
            if status == DONE and not checkpoints.usable(saved):
                status, value = FAILED, None
                error = (f"CheckpointNotSaved: the objective returned without saving into trial.checkpoint_dir "
                         f"({saved}) (member {task.segment[0]}, epochs {task.segment[2]}-{task.segment[3] - 1}): save "
                         f"model and optimizer there before returning, e.g. hpc_hpo.tf.save_checkpoint(trial, model) "
                         f"(rank {self.rank} on {self.host})")
        self.send(Result(task.trial_id, value, outcome.metrics, error, t_start, t_end,
                         status, outcome.memory_mb, self.retired, trained, saved_mb,
                         error.startswith(CheckpointError.__name__ + ":")))
        if self.retired:
            self.close()  # after the result: the master hands the trial's work to the others at once

    def _segment_context(self, task: Task, context: TrialContext) -> TrialContext:
        """The trial context of a pbt segment: its member, epochs, and the checkpoints it restores and saves."""
        member, parent, start, end = task.segment
        workdir = self.config.experiment.workdir
        epochs = self.config.phases[task.phase - 1].options["epochs"]
        restore = str(checkpoints.checkpoint_dir(workdir, parent)) if parent >= 0 else None
        return dataclasses.replace(context, member=member, start_epoch=start, end_epoch=end, max_epochs=epochs,
                                   restore_from=restore,
                                   checkpoint_dir=str(checkpoints.checkpoint_dir(workdir, task.trial_id)))

    def await_verdict(self, trial_id: int, epoch: int) -> bool:
        """The stopping rule's verdict on the epoch just reported (True: stop). It comes within milliseconds;
        without one (the job is ending, or VERDICT_TIMEOUT passed) the trial goes on."""
        started = time.monotonic()
        deadline = started + VERDICT_TIMEOUT
        backoff = Backoff(spin=0.0005, max_sleep=0.0005)
        while trial_id not in self._verdicts:
            # In one process the verdict came inside the send; over MPI ``abandon`` polls and keeps it.
            if self.abandon is None or self.abandon():
                return False
            if time.monotonic() > deadline:
                log.warning("trial %d: no verdict of the stopping rule after epoch %d within %g s; it goes on",
                            trial_id, epoch, VERDICT_TIMEOUT)
                return False
            backoff.wait()
        stop = self._verdicts.pop(trial_id)
        log.debug("trial %d: %s after epoch %d (verdict in %.2f ms)", trial_id, "stopped" if stop else "goes on", epoch,
                  1e3 * (time.monotonic() - started))
        return stop

    def _look_ahead(self, task: Task, params: dict) -> None:
        """Prepare the next Bayesian step in a helper thread while this trial runs, with the trial itself and the
        points running elsewhere as pending (:meth:`BayesSuggester.prepare`): the next step then folds in what
        finished meanwhile. The next step waits for it, so the same seed gives the same points.

        Under MPI with the trial in a child process, and once this worker knows how long a trial takes (its last
        one), the step is prepared later, with fresher data: shortly before the trial is expected to end the
        worker asks the master for the results it has not seen (:meth:`refresh`), and prepares the step from the
        :class:`Update` (:meth:`_prepare_from`); then only the results of the last moments are folded in. A trial
        that ends before that moment gets the whole step; except past ``KEEP_POSTERIOR_FROM`` points, where the step
        is prepared at the start too: folding a trial's worth of results into it costs a tenth of a whole step.
        """
        options = self.config.phases[task.phase - 1].options
        if self.can_refresh and isinstance(self.executor, ProcessExecutor) and self._last_trial_seconds is not None:
            lead = self._last_step_seconds + REFRESH_MARGIN
            self._refresh = (time.monotonic() + max(0.0, self._last_trial_seconds - lead), task.trial_id, options)
            self.executor.abandon_poll = min(ABANDON_POLL, max(UPDATE_POLL, self._refresh[0] - time.monotonic()))
            if not self._suggester.keeps_posterior:
                return  # (a trial that ends before its moment gets the whole step)
        log.debug("trial %d: preparing the next step beside it%s", task.trial_id,
                  ", keeping its posterior" if self._suggester.keeps_posterior else "")
        self._start_look_ahead([*task.suggest[1], params], options)

    def _start_look_ahead(self, pending: list, options: dict) -> None:
        def prepare() -> None:
            started = time.perf_counter()
            self._suggester.prepare(pending, options)
            self._last_step_seconds = time.perf_counter() - started

        self._lookahead = threading.Thread(target=prepare, name="hpc_hpo-lookahead", daemon=True)
        self._lookahead.start()

    def refresh(self) -> None:
        """Ask the master for the results this worker has not seen, once, when the look-ahead's moment has come
        (called while the trial runs, each time the driver asks ``abandon``)."""
        now = time.monotonic()
        if self._refresh is None:
            if self._refreshed is not None and now > self._update_due:  # no answer yet (the phase may have ended)
                self.executor.abandon_poll = REFRESH_POLL
            return
        if now < self._refresh[0]:  # wake at the moment, not a poll interval after it
            self.executor.abandon_poll = min(ABANDON_POLL, max(UPDATE_POLL, self._refresh[0] - now))
            return
        _, trial_id, self._refreshed = self._refresh
        self._refresh = None
        self._update_due = now + UPDATE_WAIT
        self.executor.abandon_poll = UPDATE_POLL  # the Update is taken within milliseconds of its arrival
        log.debug("trial %d: asking for the latest results to prepare the next step", trial_id)
        self.send(Refresh(trial_id))

    def _prepare_from(self, update: Update) -> None:
        """The master's answer to :meth:`refresh`: add the results to the replica now, prepare the step in the helper
        thread with the points running now as pending (this worker's trial among them)."""
        options, self._refreshed = self._refreshed, None
        if isinstance(self.executor, ProcessExecutor):
            self.executor.abandon_poll = ABANDON_POLL
        if self._suggester is None:
            return
        self._join_look_ahead()
        observations, pending, _ = update.suggest
        self._suggester.update(observations)  # always: the master counts them as seen, no later task brings them
        if options is None:
            return
        log.debug("trial %d: preparing the next step with %d new results, %d running", update.trial_id,
                  len(observations), len(pending))
        self._start_look_ahead(list(pending), options)

    def _join_look_ahead(self) -> None:
        if self._lookahead is not None:
            self._lookahead.join()
            self._lookahead = None

    def choose(self, task: Task) -> dict:
        """The Bayesian step: update the replica, choose a point, tell the master before evaluating it."""
        looked_ahead = self._lookahead is not None
        self._join_look_ahead()
        if self._suggester is None and not task.segment:
            self._suggester = self._make_suggester()
        observations, pending, slot = task.suggest
        started = time.perf_counter()
        if task.segment:  # PB2: the values the member trains with from here, from the population's progress
            from ..search.gp.pb2 import pb2_choose

            params = pb2_choose(self.config.space, task.params, task.segment[3], observations, pending,
                                self.config.experiment.minimize, self._suggester_rng())
        else:
            self._suggester.update(observations)
            params = self._suggester.suggest(pending, self.config.phases[task.phase - 1].options, slot)
        seconds = time.perf_counter() - started
        if not looked_ahead:
            self._last_step_seconds = seconds
        log.debug("trial %d: chose %s in %.3fs from %d observations (%s)", task.trial_id, params, seconds,
                  len(observations) if task.segment else self._suggester.observations,
                  "pb2" if task.segment else f"{self._suggester.last_step} step")
        self.send(Suggested(task.trial_id, params, seconds))
        return params

    def _suggester_rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng([self.config.experiment.seed, 0, self.rank])  # this worker's own stream
        return self._rng

    def _make_suggester(self):
        from ..search.gp.suggester import BayesSuggester

        return BayesSuggester(self.config.space, self.config.experiment.minimize, self._suggester_rng())

    def close(self) -> None:
        self._join_look_ahead()
        if self.executor is not None:
            self.executor.close()
            self.executor = None


def run_worker(comm: Comm) -> Ended:
    """Join, then serve the master until it says Stop; return the exit code it gives, and why.

    A stop signal (:mod:`hpc_hpo.run.signals`) drops the running trial (its result is not sent:
    the master re-runs it on resume), tells the master (``Interrupted``), and waits for its
    Stop; a Stop that arrives while a trial runs in a child drops that trial too. After a
    shutdown's Stop the worker says ``Bye``, so the master knows it may end.
    """
    worker = Worker(comm.rank, send=lambda message: comm.send(message, MASTER))
    stop_request = worker.stop_request = StopRequest(on_second=lambda signum: comm.abort(EXIT_INTERRUPTED)).install()
    worker.join(here(comm.rank))
    received_during_trial: list[Message] = []  # a Stop that came while a trial ran in a child

    def abandon() -> bool:
        if stop_request.requested:
            return True
        worker.refresh()
        received = comm.poll()
        if received is not None:
            if type(received[1]) in (Verdict, Update):
                worker.handle(received[1])  # for the running trial, which waits for it; the look-ahead's data
            else:
                received_during_trial.append(received[1])
        return bool(received_during_trial) and isinstance(received_during_trial[0], Stop)

    worker.abandon = abandon
    worker.can_refresh = True
    # A worker polls only between its trials, when the master's answer is due within milliseconds:
    # sleeps of at most 2 ms (not 10) took about a point of utilisation back with 1-second trials.
    backoff = Backoff(spin=0.001, max_sleep=0.002)
    told_master = False
    while True:
        if received_during_trial:
            message = received_during_trial.pop(0)
        else:
            received = comm.poll()
            if received is None:
                if stop_request.requested and not told_master:
                    log.info("got %s: dropping the running trial (it runs again on --resume)", stop_request.name)
                    comm.send(Interrupted(stop_request.signum), MASTER)
                    told_master = True
                backoff.wait()
                continue
            message = received[1]
        backoff.reset()
        if isinstance(message, Stop):
            worker.stop(message)
            return Ended(message.exit_code, message.reason)
        if stop_request.requested:
            continue  # the job is ending: no new work
        try:
            worker.handle(message)
        except TrialAbandoned:
            continue  # nothing is sent for a dropped trial
        if not worker.binding.takes_trials or worker.retired:  # only Stop will come
            backoff = Backoff(spin=0.0, max_sleep=0.1)
