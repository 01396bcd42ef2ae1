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

from celeriac.errors import AppTimeout, SerializationError
from celeriac.wire import payload
from celeriac.wire.call import AppFailed, Call, Failure


def stops_the_worker(exc: BaseException) -> bool:
    """Whether ``exc`` is Celery telling the worker to stop (its signal handlers raise these
    wherever the worker's main thread is, even inside an app), not something the app did."""
    return type(exc).__name__ in ("WorkerShutdown", "WorkerTerminate") and \
        type(exc).__module__ == "celery.exceptions"


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
        from celeriac.wire.deaths import describe
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
