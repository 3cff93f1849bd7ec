"""One job per results file: a lock file beside it, ``results.h5.lock``.

HDF5's own file lock cannot do this: a SWMR writer drops it so that readers may open the
file. The master holds a POSIX record lock (``fcntl.lockf``, which NFS and Lustre forward to
their lock managers) on the lock file for the whole run; the file also says who holds it
(host, pid, SLURM/PBS job, start time), for the error message of a second job. A job that is
killed loses its lock with its process, so the next job finds the file unlocked, says the
lock was stale, and takes it over. Where the file system has no locks at all, the holder's
host and pid decide: a dead process on this host is stale; one on another host is not.

A job that ends cleanly removes the lock file before it drops the lock. A job that opened the
old file meanwhile may then lock it, but it checks that the file it locked is still the one at
the path (device and inode) and starts again if not: two jobs never both believe they hold it.
POSIX locks belong to the process and go when it closes *any* descriptor of the file, so the
master never opens the lock file except through :class:`ResultsLock`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import ResultsWriteError, StoreError

log = logging.getLogger(__name__)

#: How often to try again when the lock file was replaced between opening and locking it.
_REPLACED_TRIES = 1000


def lock_path(results: str | Path) -> Path:
    results = Path(results)
    return results.with_name(results.name + ".lock")


def _job_id() -> str:
    for var in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID"):
        if os.environ.get(var):
            return f"{var.split('_')[0].lower()} job {os.environ[var]}"
    return ""


def _describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    job = f", {holder['job']}" if holder.get("job") else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{job}, since {since}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultsLock:
    """Held by the master from before the results file is opened until it is closed."""

    def __init__(self, results: str | Path):
        self.results = Path(results)
        self.path = lock_path(results)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StoreError` naming the job that holds it."""
        for _ in range(_REPLACED_TRIES):
            fd = self._lock_one()
            if fd is not None:
                break
        else:  # pragma: no cover - a lock file replaced a thousand times in a row
            raise StoreError(f"{self.results}: cannot lock '{self.path}': it keeps being replaced")
        me = {"host": socket.gethostname(), "pid": os.getpid(), "job": _job_id(), "since": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk: resumable, as in the middle of a run
                raise ResultsWriteError(f"cannot write {self.path} ({exc.strerror})") from None
            raise StoreError(f"{self.results}: cannot write the lock file '{self.path}' ({exc.strerror})") from None
        self._fd = fd

    def _lock_one(self) -> int | None:
        """Lock the lock file as it is now: its descriptor, or None if it was replaced meanwhile (try again).

        A holder removes the file when it releases the lock. Whoever opened the old file before that can
        lock it afterwards; a lock on a file no longer at ``self.path`` guards nothing (a third job would
        lock the new file), so it is dropped and taken again on the file that is there now.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"{self.results}: cannot create the lock file '{self.path}' ({exc.strerror})") from None
        holder = self._read(fd)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise StoreError(f"{self.results}: in use by another run ({_describe(holder)}); wait for it to end, "
                                 f"or use another --results") from None
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            # No locks on this file system: judge by the holder's host and pid.
            if holder and (holder.get("host") != socket.gethostname() or pid_alive(int(holder.get("pid", 0)))):
                os.close(fd)
                raise StoreError(f"{self.results}: in use by another run ({_describe(holder)}; this file system has no "
                                 f"locks, so hpc_hpo cannot tell whether it still runs); if it does not, delete "
                                 f"'{self.path}'") from None
        if not self._still_there(fd):
            os.close(fd)
            return None
        if holder:
            log.warning("%s: taking over a stale lock (%s): that run ended without releasing it", self.results,
                        _describe(holder))
        return fd

    def _still_there(self, fd: int) -> bool:
        """Whether ``fd`` is the file now at ``self.path`` (not one a releasing holder removed)."""
        try:
            held, current = os.fstat(fd), os.stat(self.path)
        except OSError:
            return False
        return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order: see :meth:`_lock_one`)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # an empty lock file is not mistaken for a stale one
            self.path.unlink()
        os.close(self._fd)  # closing drops the lock
        self._fd = None

    def __enter__(self) -> ResultsLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Flock(ctypes.Structure):
    """Linux's ``struct flock``, for asking who holds a lock without taking it (F_GETLK)."""

    _fields_ = [("l_type", ctypes.c_short), ("l_whence", ctypes.c_short), ("l_start", ctypes.c_long),
                ("l_len", ctypes.c_long), ("l_pid", ctypes.c_int)]


def writer_state(results: str | Path) -> str:
    """Whether a job is writing ``results`` now, asked of its lock without taking it (readers never disturb a job):

    ``"running"``: a process holds the lock; ``"gone"``: the lock file is there but nobody holds it (the job that
    wrote it was killed: a job that ends cleanly removes it); ``"unknown"``: no lock file (a copy of the file,
    say) or a file system without locks.
    """
    try:
        fd = os.open(lock_path(results), os.O_RDONLY)
    except OSError:
        return "unknown"
    try:
        probe = _Flock(l_type=fcntl.F_WRLCK, l_whence=os.SEEK_SET, l_start=0, l_len=0)
        answer = _Flock.from_buffer_copy(fcntl.fcntl(fd, fcntl.F_GETLK, bytes(probe)))
    except OSError:
        return "unknown"
    finally:
        os.close(fd)
    return "gone" if answer.l_type == fcntl.F_UNLCK else "running"
