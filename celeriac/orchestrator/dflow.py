"""The DataFlowKernel: turns app calls into tasks and runs each when its inputs are ready.

Decisions (ready? dependency failed? retry? relaunch after a lost worker?) are plain code over
task records; the only I/O is ``executor.submit`` and setting futures. State changes go through
``TaskRecord.move`` under one lock; futures are completed outside it, because completing a
future runs callbacks that may submit more tasks.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import random
import threading
import time
from concurrent.futures import CancelledError, Future
from functools import partial
from typing import Optional

from celeriac.config import Config
from celeriac.errors import (
    CeleriacError,
    ConfigurationError,
    DependencyError,
    JoinError,
)
from celeriac.orchestrator import retries
from celeriac.orchestrator.checkpoint import CheckpointStore, load_checkpoints
from celeriac.orchestrator.context import RunContext, new_run_id
from celeriac.orchestrator.dependencies import find_futures, resolve, root_cause
from celeriac.orchestrator.executors.threads import ThreadPoolExecutor
from celeriac.orchestrator.futures import AppFuture, DataFuture
from celeriac.orchestrator.memo import MemoTable, make_hash
from celeriac.orchestrator.runlog import in_run
from celeriac.orchestrator.states import FINAL_STATES, States, TaskRecord
from celeriac.workers.execute import Call

logger = logging.getLogger(__name__)

INTERNAL = "_celeriac_internal"
AUTO_LOGNAME = -1
_STD_STREAMS = ("stdout", "stderr")


class DataFlowKernel:
    """Runs app calls as tasks on the configured executors.

    Args:
        config: what to run on; None means ``Config()`` (embedded broker, local workers).

    Usable as a context manager: leaving the block applies ``config.exit_mode``.
    """

    def __init__(self, config: Optional[Config] = None):
        self.run_id = new_run_id()  # first: what this DFK logs is its run's from here on
        self._start(config)

    @in_run
    def _start(self, config: Optional[Config]) -> None:
        self.config = config if config is not None else Config()
        self._lock = threading.RLock()
        self._ids = itertools.count()
        self.tasks: dict[int, TaskRecord] = {}
        self._cleaned = False
        executors = self.config.executors
        if not executors:  # the default, made per DFK so a Config can be loaded again
            from celeriac.orchestrator.executors.celery import CeleryExecutor
            executors = [CeleryExecutor(label="celery")]
        self.executors = {e.label: e for e in executors}
        if INTERNAL in self.executors:  # before RunContext, which opens the run's log file
            raise ConfigurationError(f"executor label {INTERNAL!r} is reserved")
        self._memo = (MemoTable(load_checkpoints(self.config.checkpoint_files))
                      if self.config.app_cache else None)
        self._context = RunContext(self.config, self.run_id)
        self.run_dir = self._context.run_dir
        self.checkpoint_dir = os.path.join(self.run_dir, "checkpoint")
        self._checkpoints = CheckpointStore(self.checkpoint_dir)
        self._timers = retries.DelayedCalls()
        if self.config.checkpoint_mode == "periodic":
            self._timers.call_later(self.config.checkpoint_seconds, self._periodic_checkpoint)
        self._internal = ThreadPoolExecutor(INTERNAL, self.config.internal_tasks_max_threads)
        self._internal.start()
        try:
            for executor in self.executors.values():
                executor.start(self._context)
        except BaseException:
            self.cleanup()
            raise
        atexit.register(self.atexit_cleanup)
        logger.info("DFK started: run %s in %s, executors %s", self.run_id, self.run_dir,
                    list(self.executors))

    # ----------------------------------------------------------------- submission

    @in_run
    def submit(self, func, app_args, executors="all", cache=False, ignore_for_cache=None,
               app_kwargs=None, join=False, kind="python", func_name=None,
               accepts=None, retry_policy=None) -> AppFuture:
        """Make a task for one app call and return its future at once.

        Raises:
            ConfigurationError: the app names executors this DFK does not have, or the
                call's walltime is not a positive number.
            InvalidResourceSpecification: the executor rejects the resource specification.
        """
        if self._cleaned:
            raise CeleriacError("this DataFlowKernel has been cleaned up; load a new one")
        func_name = func_name or getattr(func, "__name__", "app")
        label = INTERNAL if join else self._choose_executor(executors, func_name)
        kwargs = dict(app_kwargs or {})
        walltime = kwargs.get("walltime")
        if walltime is not None and (isinstance(walltime, bool) or
                                     not isinstance(walltime, (int, float)) or walltime <= 0):
            raise ConfigurationError(
                f"walltime must be a positive number of seconds, not {walltime!r}")
        spec = kwargs.get("parsl_resource_specification") or {}
        if not isinstance(spec, dict):
            raise ConfigurationError("parsl_resource_specification must be a dict")
        self._executor(label).validate_resource_spec(spec)
        tid = next(self._ids)
        for stream in _STD_STREAMS:
            if kwargs.get(stream) == AUTO_LOGNAME:
                kwargs[stream] = os.path.join(
                    self.run_dir, "task_logs", f"{tid // 10000:04d}",
                    f"task_{tid:04d}_{func_name}.{stream}")
        record = TaskRecord(id=tid, func=func, func_name=func_name, kind="join" if join else kind,
                            args=tuple(app_args), kwargs=kwargs, executor=label,
                            resource_specification=spec, walltime=walltime,
                            cache=cache, ignore_for_cache=tuple(ignore_for_cache or ()),
                            dfk=self, accepts=accepts,
                            retry_policy=retry_policy or self.config.retry_policy)
        fut = AppFuture(record)
        record.app_fu = fut
        fut._outputs = tuple(DataFuture(fut, f, tid) for f in kwargs.get("outputs", ()) or ())
        deps = find_futures(record.args, kwargs)
        record.depends = deps
        record.waiting = len(deps)
        with self._lock:
            self.tasks[tid] = record
        logger.debug("task %s %s submitted to %s with %d dependencies", tid, func_name, label,
                     len(deps))
        if not deps:
            self._launch(record)
        else:
            for dep in deps:
                dep.add_done_callback(partial(self._dependency_done, record))
        return fut

    def deferred(self, func, *args) -> AppFuture:
        """A future of ``func(*args)`` run in-process once its future arguments are done."""
        return self.submit(func, args, executors=[INTERNAL], kind="internal",
                           func_name=getattr(func, "__name__", "deferred").lstrip("_"))

    def _choose_executor(self, executors, func_name) -> str:
        if executors == "all":
            choices = list(self.executors)
        else:
            if isinstance(executors, str):
                executors = [executors]
            unknown = [e for e in executors if e not in self.executors and e != INTERNAL]
            if unknown:
                raise ConfigurationError(
                    f"app {func_name!r} asks for executors {unknown}, but the loaded config "
                    f"has {sorted(self.executors)}; add an executor with that label, or "
                    "change the app's executors=")
            choices = list(executors)
        if INTERNAL in choices:
            return INTERNAL
        return choices[0] if len(choices) == 1 else random.choice(choices)

    def _executor(self, label: str):
        return self._internal if label == INTERNAL else self.executors[label]

    def _dependency_done(self, record: TaskRecord, _fut: Future) -> None:
        with self._lock:
            record.waiting -= 1
            ready = record.waiting == 0
        if ready:
            self._launch(record)

    # ----------------------------------------------------------------- launching

    def _launch(self, record: TaskRecord) -> None:
        # Runs in dependency callbacks, where an exception would only be logged: whatever
        # goes wrong fails this task instead of leaving its future unresolved.
        try:
            self._resolve_and_launch(record)
        except Exception as e:
            logger.exception("task %s could not be launched", record.id)
            self._finish(record, States.failed, exception=e)

    def _resolve_and_launch(self, record: TaskRecord) -> None:
        args, kwargs, failures = resolve(record.args, record.kwargs)
        record.depends = []
        if failures:
            exc = DependencyError(failures, record.id)
            exc.__cause__ = root_cause(failures[0][0])
            self._finish(record, States.dep_fail, exception=exc)
            return
        if self._memo is not None and record.cache:
            try:  # keyed on the dependencies' results, now that they are known
                record.hashsum = make_hash(record.func, record.func_name, args, kwargs,
                                           record.ignore_for_cache, record.kind)
            except Exception as e:  # ValueError for a type id_for_memo does not know
                self._finish(record, States.failed, exception=e)
                return
            self._memo_lookup(record, args, kwargs)
            return
        self._send(record, args, kwargs)

    def _memo_lookup(self, record: TaskRecord, args, kwargs, _other=None) -> None:
        try:
            verdict, value = self._memo.claim(record.hashsum, record.app_fu)
        except Exception as e:
            self._finish(record, States.failed, exception=e)
            return
        if verdict == "hit":
            logger.debug("task %s: result from the memo table", record.id)
            self._finish(record, States.memo_done, result=value)
        elif verdict == "wait":  # an identical call is in flight: take its result, or run
            value.add_done_callback(partial(self._memo_lookup, record, args, kwargs))
        else:
            self._send(record, args, kwargs)

    def _send(self, record: TaskRecord, args, kwargs) -> None:
        with self._lock:
            if record.status in FINAL_STATES:
                return
            record.move(States.launched)
            record.try_id += 1
            try_id = record.try_id
            if record.started is None:
                record.started = time.monotonic()
        executor = self._executor(record.executor)
        call = self._make_call(record, args, kwargs, try_id)
        try:
            exec_fu = executor.submit(record.func, call, record.resource_specification)
        except Exception as e:
            logger.info("task %s could not be submitted: %s", record.id, e)
            self._finish(record, States.failed, exception=e)
            return
        record.resolved = (args, kwargs)
        exec_fu.add_done_callback(partial(self._executor_done, record, try_id))

    def _make_call(self, record: TaskRecord, args, kwargs, try_id: int) -> Call:
        accepts = record.accepts
        if accepts is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in accepts or not _special(k)}
        return Call(task_id=f"{self.run_id}.{record.id}.{try_id}", tid=record.id,
                    name=record.func_name, kind="bash" if record.kind == "bash" else "python",
                    args=args, kwargs=kwargs, walltime=record.walltime,
                    stdout=record.kwargs.get("stdout"), stderr=record.kwargs.get("stderr"),
                    outputs=tuple(record.kwargs.get("outputs", ()) or ()))

    # ----------------------------------------------------------------- outcomes

    def _executor_done(self, record: TaskRecord, try_id: int, fut: Future) -> None:
        if try_id != record.try_id or record.status is not States.launched:
            return  # an outcome for a try that was already superseded
        if fut.cancelled():
            # Executors drop queued work when they shut down, and cleanup() then fails the
            # task saying why; any other cancellation fails it here rather than leave it hanging.
            if not self._cleaned:
                self._finish(record, States.failed, exception=CeleriacError(
                    f"task {record.id} ({record.func_name}) was cancelled by executor "
                    f"{record.executor!r}"))
            return
        exc = fut.exception()
        if exc is None:
            result = fut.result()
            if record.kind == "join":
                self._join(record, result)
            else:
                self._finish(record, States.exec_done, result=result)
            return
        try:
            decision = retries.decide(
                record, exc, retries=self.config.retries, retry_handler=self.config.retry_handler,
                policy=record.retry_policy, worker_lost_retries=self.config.worker_lost_retries)
        except Exception as handler_exc:
            logger.exception("the retry handler or policy failed for task %s", record.id)
            self._finish(record, States.failed, exception=handler_exc)
            return
        if decision.lost_free:
            logger.warning("task %s (%s): %s; relaunching it (lost-worker relaunch %d of %d, "
                           "no retry spent)", record.id, record.func_name, exc,
                           record.lost_count, self.config.worker_lost_retries)
        elif decision.retry:
            logger.info("task %s (%s) failed on try %d (%r); retrying in %.3g s", record.id,
                        record.func_name, record.try_id, exc, decision.delay)
        if decision.retry:
            self._retry(record, decision.delay)
            return
        if record.try_id > 1:
            _add_note(exc, f"celeriac: task {record.id} ({record.func_name}) failed after "
                           f"{record.try_id} tries; this is the error of the last one")
        logger.info("task %s (%s) failed after %d tries: %r", record.id, record.func_name,
                    record.try_id, exc)
        self._finish(record, States.failed, exception=exc)

    def _retry(self, record: TaskRecord, delay: float = 0.0) -> None:
        with self._lock:
            if record.status in FINAL_STATES:  # cleanup ended it meanwhile
                return
            record.move(States.pending)
        args, kwargs = record.resolved
        if delay > 0:  # on the timer thread: a backoff blocks neither the DFK nor other tasks
            self._timers.call_later(delay, self._send, record, args, kwargs)
        else:
            self._send(record, args, kwargs)

    def _join(self, record: TaskRecord, inner) -> None:
        futures = inner if isinstance(inner, (list, tuple)) else [inner]
        if not all(isinstance(f, Future) for f in futures):
            self._finish(record, States.failed, exception=TypeError(
                f"join_app {record.func_name} must return a Future or a list of Futures, "
                f"not {type(inner).__name__}"))
            return
        with self._lock:
            record.move(States.joining)
            record.waiting = len(futures)
        if not futures:
            self._finish(record, States.exec_done, result=[])
            return

        def inner_done(_):
            with self._lock:
                record.waiting -= 1
                if record.waiting:
                    return
            failures = [(CancelledError() if f.cancelled() else f.exception(),
                         getattr(f, "tid", None)) for f in futures
                        if f.cancelled() or f.exception() is not None]
            if failures:
                exc = JoinError(failures, record.id)
                exc.__cause__ = failures[0][0]
                self._finish(record, States.failed, exception=exc)
            elif isinstance(inner, (list, tuple)):
                self._finish(record, States.exec_done, result=[f.result() for f in futures])
            else:
                self._finish(record, States.exec_done, result=futures[0].result())

        for f in futures:
            f.add_done_callback(inner_done)

    def _finish(self, record: TaskRecord, state: States, result=None, exception=None) -> None:
        with self._lock:
            if record.status in FINAL_STATES:
                return
            record.move(state)
            self.tasks.pop(record.id, None)
        if record.hashsum is not None:
            if state is States.failed:  # failures are not memoized: the next call runs
                self._memo.release(record.hashsum, record.app_fu)
            elif state in (States.exec_done, States.memo_done):
                self._checkpoint_entry(record, result)
        # Keep a finished record small: drop what only running needed, so memory stays flat.
        record.args = ()
        record.depends = []
        record.resolved = None
        record.kwargs = {k: record.kwargs[k] for k in _STD_STREAMS if k in record.kwargs}
        if exception is not None:
            logger.debug("task %s %s: %s", record.id, state.name, exception)
            record.app_fu.set_exception(exception)
        else:
            logger.debug("task %s %s", record.id, state.name)
            record.app_fu.set_result(result)

    # ----------------------------------------------------------------- checkpoints

    def _checkpoint_entry(self, record: TaskRecord, result) -> None:
        mode = self.config.checkpoint_mode
        if mode is None:
            return
        # A memo hit on this run's own result is in the store already: not pickled again.
        if record.hashsum not in self._checkpoints:
            import cloudpickle
            try:
                pickled = cloudpickle.dumps(result)
            except Exception as e:
                logger.warning("task %s (%s): result not checkpointed, it cannot be pickled: "
                               "%r", record.id, record.func_name, e)
                return
            self._checkpoints.add(record.hashsum, pickled, record.id, record.func_name,
                                  record.time_returned)
        if mode == "task_exit":  # durable before the future resolves
            self._flush_checkpoints()

    def _flush_checkpoints(self) -> None:
        try:
            self._checkpoints.flush()
        except Exception:
            logger.exception("could not write checkpoint entries to %s", self.checkpoint_dir)

    def _periodic_checkpoint(self) -> None:
        self._flush_checkpoints()
        self._timers.call_later(self.config.checkpoint_seconds, self._periodic_checkpoint)

    @in_run
    def checkpoint(self) -> str:
        """Write the memoized results not yet written to this run's checkpoint directory
        (what ``checkpoint_mode='manual'`` relies on); returns that directory."""
        self._checkpoints.flush()
        return self.checkpoint_dir

    # ----------------------------------------------------------------- waiting, cleanup

    def wait_for_current_tasks(self) -> None:
        """Block until every task submitted so far has finished (successfully or not)."""
        while True:
            with self._lock:
                pending = [r.app_fu for r in self.tasks.values()]
            if not pending:
                return
            for fut in pending:
                try:
                    fut.exception()
                except Exception:
                    pass

    @in_run
    def cleanup(self) -> None:
        """Stop executors, workers and the embedded broker. Safe to call more than once.

        Tasks still unfinished fail with a CeleriacError saying the DFK was cleaned up,
        so nobody waits forever on their futures.
        """
        with self._lock:
            if self._cleaned:
                return
            self._cleaned = True
            leftover = list(self.tasks.values())
        logger.info("DFK cleanup: %d tasks unfinished", len(leftover))
        self._timers.close()
        for executor in reversed(list(self.executors.values())):
            try:
                executor.shutdown()
            except Exception:
                logger.exception("executor %s failed to shut down", executor.label)
        self._internal.shutdown()
        try:
            # Outcomes may still arrive on other threads meanwhile: decide under the lock
            # which tasks cleanup ends, so that each future is completed exactly once.
            with self._lock:
                doomed = [r for r in leftover if r.status not in FINAL_STATES]
                for record in doomed:
                    record.history.append(record.status)
                    record.status = States.failed
                self.tasks.clear()
            for record in doomed:
                record.app_fu.set_exception(CeleriacError(
                    f"task {record.id} ({record.func_name}) had not finished when the "
                    "DataFlowKernel was cleaned up; wait for results before cleanup, or use "
                    "exit_mode='wait'"))
            if self.config.checkpoint_mode is not None:
                self._flush_checkpoints()
        finally:
            self._checkpoints.close()
            self._context.close()
            atexit.unregister(self.atexit_cleanup)
            from celeriac.orchestrator import loader
            loader.forget(self)

    @in_run
    def atexit_cleanup(self) -> None:
        if not self._cleaned:
            logger.warning("Python is exiting with the DFK still loaded: cleaning up")
            self.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        mode = self.config.exit_mode
        if mode == "skip":
            return
        if mode == "wait" and exc_type is None:
            self.wait_for_current_tasks()
        self.cleanup()


_SPECIAL = frozenset({"walltime", "stdout", "stderr", "inputs", "outputs",
                      "parsl_resource_specification"})


def _add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (no add_note; notes kept all the same)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]


def _special(name: str) -> bool:
    return name in _SPECIAL
