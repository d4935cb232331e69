"""One assessment at a time in a child process, with a time limit and a memory limit.

Why: one worker serves every clinic, and one photo must not stop it for everyone. A
photo that takes too long, or needs more memory than the machine can spare, would
otherwise hold the worker (and the server's memory) for as long as it liked; a
thread cannot be stopped or limited. So the worker forks a child for each job:

* the child inherits the assessor the server loaded once (copy-on-write: the model
  is not loaded again, the fork costs milliseconds), runs the job's work, reports
  each stage and then the result through a pipe, and exits;
* its address space may grow by at most ``memory_mb`` beyond what the server had
  mapped when it forked (``RLIMIT_AS``): past that an allocation fails, and the job
  fails with the memory limit as its reason (or, where a library aborts instead of
  raising, the child dies and the job fails saying so);
* past ``time_s`` the worker kills the child and the job fails with the time limit
  as its reason. Either way the worker goes on with the next job, and the memory the
  child used goes back to the system with it;
* the child keeps freed memory for reuse while it works (it is about to exit; see
  :mod:`pipeline.runtime`), and dies with the server (``PR_SET_PDEATHSIG``).

Where there is no ``fork`` (not Linux or another POSIX system) the work runs in the
worker thread, without limits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["JobInterrupted", "JobLimits", "JobOverLimit", "run_isolated"]

log = logging.getLogger("smp.web.jobs")
_T = TypeVar("_T")
#: How often the worker looks at the clock and at a stop request while a child works.
_TICK_S = 0.2
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class JobLimits:
    """How long one job may run (``time_s``) and how much memory it may add (``memory_mb``)."""

    time_s: float = 900.0
    memory_mb: int = 6144

    @classmethod
    def of(cls, settings: Any) -> JobLimits:
        """The limits of :class:`pipeline.web.settings.WebSettings`."""
        return cls(time_s=float(settings.job_time_limit_s), memory_mb=int(settings.job_memory_limit_mb))


class JobOverLimit(Exception):
    """A job stopped by one of its limits; the message (one line) is the job's reason."""


class JobInterrupted(Exception):
    """The worker is stopping: the child was ended, the job is not finished."""


def time_limit_reason(limits: JobLimits) -> str:
    return f"stopped: the assessment took longer than the time limit of {limits.time_s:g} s"


def memory_limit_reason(limits: JobLimits) -> str:
    return f"stopped: the assessment needed more memory than the limit of {limits.memory_mb} MB"


def is_out_of_memory(exc: BaseException) -> bool:
    """A failed allocation, as NumPy (MemoryError), OpenCV or PyTorch report it."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or ("alloc" in text and "memory" in text)


def run_isolated(
    work: Callable[[Callable[[str], None]], _T],
    limits: JobLimits,
    *,
    progress: Callable[[str], None],
    stopping: Callable[[], bool] = lambda: False,
) -> _T:
    """``work(report)`` in a child process under ``limits``; its result (it must pickle).

    ``report(stage)`` in the child calls ``progress(stage)`` here. An exception ``work``
    raises is raised here (as a RuntimeError naming it if it cannot be pickled);
    :class:`JobOverLimit` when a limit stopped it, :class:`JobInterrupted` when
    ``stopping()`` became true meanwhile.
    """
    if not hasattr(os, "fork"):
        return work(progress)
    reader, writer = multiprocessing.Pipe(duplex=False)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        reader.close()
        _child(work, limits, writer)
    writer.close()
    try:
        return _watch(pid, reader, limits, progress, stopping)
    finally:
        reader.close()
        _reap(pid)


def _child(work: Callable[[Callable[[str], None]], Any], limits: JobLimits, writer: Any) -> None:
    code = 0
    try:
        _become_worker(limits)
        result = work(lambda stage: writer.send(("stage", stage)))
        writer.send(("done", result))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the worker, then the child exits
        code = 1
        try:
            writer.send(("failed", _portable(exc, limits), traceback.format_exc()))
        except BaseException:  # noqa: BLE001 - the pipe is gone: the worker sees the exit status
            code = 2
    finally:
        os._exit(code)  # no cleanup of the server's state in the child (engines, threads, atexit)


def _become_worker(limits: JobLimits) -> None:
    """The child's settings: its own signals, death with the server, the memory limit, one torch thread."""
    from pipeline.runtime import reuse_freed_memory

    # torch on one thread: a child forked from a process whose OpenMP team ever had threads waits forever at
    # its first parallel op (the team's threads are not in the child; measured: every assessment with the
    # network hung, and a parent that ran torch on two threads hangs a child asking for two, not one)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    else:
        torch.set_num_threads(1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    reuse_freed_memory()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _mapped_bytes() + limits.memory_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _mapped_bytes() -> int:
    """This process's address space now (``VmSize``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _portable(exc: BaseException, limits: JobLimits) -> BaseException:
    """What the worker gets of the child's exception: itself if it pickles, the memory limit's
    reason for a failed allocation, else a RuntimeError naming it."""
    if is_out_of_memory(exc):
        return JobOverLimit(memory_limit_reason(limits))
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an exception that does not pickle is told by its name and text
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _watch(
    pid: int, reader: Any, limits: JobLimits, progress: Callable[[str], None], stopping: Callable[[], bool]
) -> Any:
    deadline = time.monotonic() + limits.time_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            _kill(pid)
            raise JobOverLimit(time_limit_reason(limits))
        if stopping():
            _kill(pid)
            raise JobInterrupted("the worker is stopping")
        if not reader.poll(min(_TICK_S, left)):
            continue
        try:
            message = reader.recv()
        except (EOFError, OSError):
            raise JobOverLimit(_death_reason(pid, limits)) from None
        if message[0] == "stage":
            progress(message[1])
        elif message[0] == "done":
            return message[1]
        else:
            _, exc, child_traceback = message
            if not isinstance(exc, JobOverLimit):
                log.debug("job failed in its process:\n%s", child_traceback)
            raise exc


def _death_reason(pid: int, limits: JobLimits) -> str:
    """Why the child ended without a word: its exit status, read now (it has ended)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        status = 0
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return (
            f"stopped: the assessment process ended with {name}, most likely past the memory limit of "
            f"{limits.memory_mb} MB"
        )
    return f"stopped: the assessment process ended unexpectedly (exit status {os.WEXITSTATUS(status)})"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Wait for the child (it has ended, or was killed): no zombie is left."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
