"""Running one app call where it lands: in a worker process, or a thread for ThreadPoolExecutor.

A python app with a ``walltime`` runs in a forked child that is killed when the time is up,
so even a call stuck in C code ends on time (Parsl only notices after the call returns).

Whatever the app raises is its task's failure, even ``SystemExit`` or ``KeyboardInterrupt``:
those become :class:`~celeriac.errors.AppExited`, an ordinary exception, so they never end
the worker (or the user's process, for ThreadPoolExecutor) that ran the app.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

from celeriac.errors import AppExited, AppTimeout, SerializationError
from celeriac.workers import payload


@dataclass
class Call:
    """One try of one app call, as a worker needs it (the function travels separately)."""

    task_id: str                 # unique per try; the Celery task id
    tid: int                     # the DFK's task id
    name: str                    # the app's name, shown in Flower and logs
    kind: str                    # 'python' or 'bash'
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    walltime: Optional[float] = None
    stdout: object = None        # bash apps: path, (path, mode) or None
    stderr: object = None
    outputs: tuple = ()          # bash apps: Files that must exist afterwards
    staging: object = None       # a celeriac.staging.intask.StagePlan: transfers around the app


@dataclass
class Failure:
    """An exception from an app, with its traceback as text (tracebacks don't pickle)."""

    exception: BaseException
    traceback: str

    @classmethod
    def capture(cls, exc: BaseException, skip_frames: int = 0, app_name: str = "") -> "Failure":
        """The failure of app ``app_name`` that raised ``exc`` (its traceback kept as text).

        An exception that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``, ...)
        is replaced by :class:`AppExited` saying what the app did.
        """
        tb = exc.__traceback__
        for _ in range(skip_frames):
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        if not isinstance(exc, Exception):
            exc = exited(exc, app_name)
        return cls(exc, text)

    def portable(self) -> "Failure":
        """This failure, with the exception replaced by a description if it won't pickle."""
        try:
            payload.dumps(self.exception)
            return self
        except SerializationError:
            exc = self.exception
            return Failure(SerializationError(
                f"the app raised {type(exc).__module__}.{type(exc).__qualname__}: {exc}, "
                "which could not be pickled to send back; its traceback is attached"),
                self.traceback)


def exited(exc: BaseException, app_name: str) -> AppExited:
    """An :class:`AppExited` describing ``exc``, which is not an ``Exception``."""
    if isinstance(exc, SystemExit):
        code = exc.code
        what = "called sys.exit()" if code is None else f"called sys.exit({code!r})"
        return AppExited(app_name, what, code if isinstance(code, (int, str)) else None)
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"
    try:
        text = str(exc)
    except Exception:
        text = ""
    return AppExited(app_name, f"raised {name}: {text}" if text else f"raised {name}")


def stops_the_worker(exc: BaseException) -> bool:
    """Whether ``exc`` is Celery telling the worker to stop (its signal handlers raise these
    wherever the worker's main thread is, even inside an app), not something the app did."""
    return type(exc).__name__ in ("WorkerShutdown", "WorkerTerminate") and \
        type(exc).__module__ == "celery.exceptions"


class AppFailed(Exception):
    """Raised inside a worker to carry a :class:`Failure` out of :func:`run_call`."""

    def __init__(self, failure: Failure):
        super().__init__(failure.exception)
        self.failure = failure


def run_call(func, call: Call, isolate_walltime: bool = True):
    """Run ``call`` and return its result.

    Raises:
        AppFailed: the app (or its bash command), or the staging of its files, failed;
            ``.failure`` says how.
    """
    if call.staging is not None:  # in-task staging: the transfers run here, around the app
        from celeriac.staging.intask import run_staged
        try:
            return run_staged(_run_app, func, call, isolate_walltime)
        except AppFailed:
            raise
        except BaseException as e:
            if stops_the_worker(e):
                raise
            raise AppFailed(Failure.capture(e, skip_frames=1, app_name=call.name)) from None
    return _run_app(func, call, isolate_walltime)


def _run_app(func, call: Call, isolate_walltime: bool):
    if call.kind == "bash":
        from celeriac.workers.bash import run_bash
        return run_bash(func, call)
    if call.walltime is not None and isolate_walltime:
        return _run_forked(func, call)
    try:
        return func(*call.args, **call.kwargs)
    except BaseException as e:
        if stops_the_worker(e):
            raise
        raise AppFailed(Failure.capture(e, skip_frames=1, app_name=call.name)) from None


def _run_forked(func, call: Call):
    """Run a python app in a forked child and kill it when its walltime is up."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: run, send the outcome, exit without running any parent cleanup
        code = 0
        try:
            os.close(rfd)
            os.setpgid(0, 0)
            try:
                outcome = (True, func(*call.args, **call.kwargs))
            except BaseException as e:
                outcome = (False, Failure.capture(e, 1, call.name).portable())
            try:
                data = payload.dumps(outcome, "app's result")
            except SerializationError as e:
                data = payload.dumps((False, Failure(e, "")))
            with os.fdopen(wfd, "wb") as out:
                out.write(data)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    deadline = time.monotonic() + call.walltime
    chunks = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AppFailed(Failure(AppTimeout(
                    f"[{call.name}] App exceeded walltime: {call.walltime} seconds"), ""))
            ready, _, _ = select.select([rfd], [], [], remaining)
            if ready:
                chunk = os.read(rfd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(rfd)
        status = _reap(pid)
    if not chunks:
        from celeriac.workers.deaths import describe
        how = "" if status is None else f": {describe(os.waitstatus_to_exitcode(status))}"
        raise AppFailed(Failure(RuntimeError(
            f"[{call.name}] the process running the app (forked for its walltime) ended "
            f"without a result{how}"), ""))
    ok, value = pickle.loads(b"".join(chunks))
    if ok:
        return value
    raise AppFailed(value)


def _reap(pid: int) -> int | None:
    """Kill the child's process group if it is still there, collect it, and return its
    wait status (None if it was already collected)."""
    try:  # a child that has exited already keeps the status it exited with
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
    except ChildProcessError:
        return None
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None
