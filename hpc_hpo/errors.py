"""One exception root for everything hpc_hpo raises on purpose (and :class:`TrialAbandoned`, which is not an
error but the signal that ends a trial when the job stops).

Every message names where the problem is, the rule that was broken and the value
that broke it, in one line: ``space.lr: 'low' must be < 'high' (got low=0.1, high=0.01)``.
"""

from __future__ import annotations

#: Exit status of a run that ended normally.
EXIT_OK = 0
#: Exit status of a run that started but failed (a broken objective, an internal error).
EXIT_FAILED = 1
#: Exit status for bad input: command line, experiment file, results path, objective import.
EXIT_USAGE = 2
#: Exit status of a run that stopped before its budget was spent, at its time limit or at a
#: signal (SIGTERM, SIGUSR1, SIGINT): everything finished is stored; run again with --resume.
EXIT_RESUMABLE = 3
#: Exit status after a second Ctrl-C (or other stop signal): ended at once; --resume still works.
EXIT_INTERRUPTED = 130


class HpoError(Exception):
    """Root of the errors hpc_hpo raises on purpose; its message is meant for the user."""

    exit_code = EXIT_FAILED


class ConfigError(HpoError):
    """Bad input: an experiment file, a command-line flag or a results path that cannot work."""

    exit_code = EXIT_USAGE


class ObjectiveImportError(ConfigError):
    """The objective named in the experiment cannot be imported or is not callable."""


class StartupTimeoutError(ObjectiveImportError):
    """A rank, or its first trial process, did not finish starting within ``workers.startup_timeout``."""


class StoreError(HpoError):
    """A results file that cannot be created, opened or read: the user must fix a path."""

    exit_code = EXIT_USAGE


class ResultsWriteError(HpoError):
    """Writing the results file failed during a run (a full disk, a read-only mount, a quota).

    What was stored before is safe; the run stops resumably and the next ``--resume`` recovers the file.
    """

    exit_code = EXIT_RESUMABLE


class SearchStoppedError(HpoError):
    """:func:`hpc_hpo.optimize`: the search stopped before its budget was spent (a stop signal, the time limit, a
    full disk); every trial that finished is stored, and ``optimize(..., resume=True)`` goes on."""

    exit_code = EXIT_RESUMABLE


class CheckpointError(HpoError):
    """A pbt segment cannot restore the checkpoint it was given (missing, empty, unreadable). Raised by the worker
    before the objective runs, or by :func:`hpc_hpo.tf.restore` inside it: the segment fails, that checkpoint is
    never used again, and the member goes back to its own last good one."""


class TrialAbandoned(BaseException):
    """The job is ending (a signal, or the master's Stop): the running trial is dropped, not recorded.

    A ``BaseException``, like ``KeyboardInterrupt``, so that an objective's ``except Exception``
    cannot swallow it when it is raised inside an inline trial.
    """
