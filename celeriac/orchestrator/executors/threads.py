"""ThreadPoolExecutor: apps run in threads of the orchestrator's own process (for debugging,
and for the DFK's internal work such as join apps)."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from concurrent.futures import Future

from celeriac.errors import AppExited, AppTimeout, RemoteTraceback, SubmitException
from celeriac.option_checks import OptionChecks
from celeriac.orchestrator import parsl_options as parsl
from celeriac.orchestrator.executors.base import Executor
from celeriac.orchestrator.runlog import carry
from celeriac.staging.base import check_storage_options
from celeriac.wire.call import AppFailed, Call
from celeriac.workers.execute import run_call


class ThreadPoolExecutor(Executor):
    """Run apps in a pool of threads.

    Args:
        label: the executor's name, for ``@python_app(executors=[...])``.
        max_threads: how many apps run at once.
        storage_access: staging providers for Files (default file, FTP, HTTP(S), zip).
        working_dir: where staged files go (default: the current directory).

    A python app's ``walltime`` fails its future with AppTimeout on time, but the thread
    itself runs on (Python cannot stop a thread); bash apps are killed.
    """

    def __init__(self, label: str = "threads", max_threads: int = 2, thread_name_prefix: str = "",
                 storage_access=None, working_dir=None, **parsl_options):
        self.ignored_options = parsl.accept(ThreadPoolExecutor, parsl_options, parsl.THREADS)
        self.storage_access, self.working_dir = check_storage_options(
            f"ThreadPoolExecutor {label!r}", storage_access, working_dir)
        checks = OptionChecks(f"ThreadPoolExecutor {label!r}")
        checks.integer("max_threads", max_threads, minimum=1)
        checks.done()
        self.label = label
        self.max_threads = max_threads
        self._prefix = thread_name_prefix or f"celeriac-{label}"
        self._pool = None
        self._shut = False
        self._lock = threading.Lock()

    def start(self, context=None) -> None:
        with self._lock:
            self._shut = False  # loaded again with a new DFK, as in Parsl
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(self.max_threads, self._prefix,
                                                   initializer=carry())  # the run's log

    def submit(self, func, call: Call, resource_specification: dict) -> Future:
        if self._shut:
            raise SubmitException(f"executor {self.label!r} has been shut down")
        if self._pool is None:
            self.start()
        inner = self._pool.submit(_run_local, func, call)
        if call.walltime is None or call.kind == "bash":
            return inner
        outer = Future()
        timer = threading.Timer(call.walltime, _settle, (outer, None, AppTimeout(
            f"[{call.name}] App exceeded walltime: {call.walltime} seconds")))
        timer.daemon = True
        timer.start()

        def copy(f):
            timer.cancel()
            exc = f.exception()
            _settle(outer, None if exc else f.result(), exc)
        inner.add_done_callback(copy)
        return outer

    def shutdown(self) -> None:
        with self._lock:
            self._shut = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _run_local(func, call: Call):
    try:
        return run_call(func, call, isolate_walltime=False)
    except AppFailed as e:
        exc = e.failure.exception
        if isinstance(exc, AppExited):  # stands for a SystemExit etc.: keep where it was raised
            raise exc from RemoteTraceback(e.failure.traceback)
        raise exc from None


def _settle(fut: Future, result, exc) -> None:
    """Set a future's outcome unless it already has one (a timer and the app race)."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except cf.InvalidStateError:
        pass
