"""The DataFlowKernel: turns app calls into tasks and runs each when its inputs are ready.

This module is the driver: the decisions are the :mod:`.kernel`'s (a pure state machine over
task records); the driver feeds it events and carries out the instructions it returns
(``executor.submit``, completing futures, timers, checkpoints). Events from every thread
join one queue, drained by one thread at a time, so completing a future whose callbacks make
more tasks ready adds to that queue instead of recursing (chains of any length take constant
stack), and no thread ever waits for another to finish handling an event.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import random
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from functools import partial
from typing import Optional

from celeriac.config import Config
from celeriac.errors import (
    CeleriacError,
    ConfigurationError,
    InvalidResourceSpecification,
    NotRun,
    SerializationError,
)
from celeriac.orchestrator import callbacks, collector, parsl_options, retries
from celeriac.orchestrator import kernel as k
from celeriac.orchestrator.checkpoint import CheckpointStore, load_checkpoints
from celeriac.orchestrator.context import RunContext, new_run_id
from celeriac.orchestrator.data_manager import INHIBIT, DataManager
from celeriac.orchestrator.dependencies import find_futures, nested_future
from celeriac.orchestrator.executors.threads import ThreadPoolExecutor
from celeriac.orchestrator.futures import AppFuture, DataFuture
from celeriac.orchestrator.memo import MemoTable
from celeriac.orchestrator.monitoring import RunDatabase, monitoring_enabled
from celeriac.orchestrator.progress import Progress
from celeriac.orchestrator.runlog import in_run
from celeriac.orchestrator.states import TaskRecord
from celeriac.orchestrator.summary import RunTally, format_summary
from celeriac.wire.call import Call

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
        self._lock = threading.RLock()      # guards _cleaned
        self._events: deque = deque()         # events waiting for the draining thread
        self._drain = threading.Lock()       # held by the thread draining them
        self._drainer = None                 # its thread id
        self._ids = itertools.count()
        self._tries: dict = {}               # task id -> (try id, executor future) while sent
        self._cleaned = False
        executors = self.config.executors
        if not executors:  # the default, made per DFK so a Config can be loaded again
            from celeriac.orchestrator.executors.celery import CeleryExecutor
            executors = [CeleryExecutor(label="celery")]
        self.executors = {e.label: e for e in executors}
        if INTERNAL in self.executors:  # before RunContext, which opens the run's log file
            raise ConfigurationError(f"executor label {INTERNAL!r} is reserved")
        memo = (MemoTable(load_checkpoints(self.config.checkpoint_files))
                if self.config.app_cache else None)
        self._context = RunContext(self.config, self.run_id)
        self.run_dir = self._context.run_dir
        self._tally = RunTally()
        self.monitoring = None  # the run database, when Config(monitoring=...) is on
        if monitoring_enabled(self.config.monitoring):
            try:
                self.monitoring = RunDatabase(self.run_dir, self.run_id)
            except Exception as e:  # a run without its database still runs
                logger.warning("the run database could not be opened, so this run is not "
                               "recorded: %s", e)
        self._context.monitoring = self.monitoring  # executors record their blocks in it
        observers = (self._tally,) if self.monitoring is None else (self._tally,
                                                                    self.monitoring)
        self._kernel = k.Kernel(retries=self.config.retries,
                                retry_handler=self.config.retry_handler,
                                worker_lost_retries=self.config.worker_lost_retries, memo=memo,
                                dependency_resolver=self.config.dependency_resolver,
                                chain_limit=self._chain_limit, observers=observers)
        self._context.tasks = self._kernel.tasks  # task-sent events name each task's parent
        if self.monitoring is not None:  # no lock: a dict copy is atomic, and cleanup holds it
            self.monitoring.state_counts = lambda: dict(self._kernel.state_counts)
        self._progress = (Progress(self._tally, lambda: self.task_state_counts)
                          if self.config.progress else None)
        self.checkpoint_dir = os.path.join(self.run_dir, "checkpoint")
        self._checkpoints = CheckpointStore(self.checkpoint_dir)
        self._timers = retries.DelayedCalls()
        if self.config.checkpoint_mode == "periodic":
            self._timers.call_later(self.config.checkpoint_seconds, self._periodic_checkpoint)
        self.data_manager = DataManager(self, INTERNAL)
        self._internal = ThreadPoolExecutor(INTERNAL, self.config.internal_tasks_max_threads)
        self._internal.start()
        collector.run_started()  # given back by cleanup, which a failed start calls too
        try:
            for executor in self.executors.values():
                executor.start(self._context)
        except BaseException:
            self.cleanup()
            raise
        atexit.register(self.atexit_cleanup)
        logger.info("DFK started: run %s in %s, executors %s", self.run_id, self.run_dir,
                    list(self.executors))
        for owner, ignored in [("Config", self.config.ignored_options)] + [
                (f"executor {e.label!r}", getattr(e, "ignored_options", {}))
                for e in self.executors.values()]:
            if ignored:
                logger.info(parsl_options.describe(owner, ignored))

    # ----------------------------------------------------------------- submission

    @in_run
    def submit(self, func, app_args, executors="all", cache=False, ignore_for_cache=None,
               app_kwargs=None, join=False, kind="python", func_name=None,
               accepts=None, retry_policy=None) -> AppFuture:
        """Make a task for one app call and return its future at once.

        A resource specification the executor rejects fails the future with
        ``InvalidResourceSpecification``, as in Parsl.

        Raises:
            ConfigurationError: the app names executors this DFK does not have, or the
                call's walltime is not a positive number.
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
        try:
            self._executor(label).validate_resource_spec(spec)
            rejected = None
        except InvalidResourceSpecification as e:
            rejected = e
        staging = (rejected is None and kind != "internal" and not kwargs.get(INHIBIT)
                   and DataManager.involved(app_args, kwargs))
        stage_ins = ()
        if staging:  # Files become the DataFutures of their stage-in tasks
            self.data_manager.check(label, tuple(app_args), kwargs)
            app_args, kwargs, plan, stage_ins = self.data_manager.stage_inputs(
                label, tuple(app_args), kwargs)
        tid = next(self._ids)
        record = TaskRecord(id=tid, func=func, func_name=func_name, kind="join" if join else kind,
                            args=tuple(app_args), kwargs=kwargs, executor=label,
                            stage_ins=tuple(stage_ins), staging=plan if staging else None,
                            resource_specification=spec, walltime=walltime,
                            cache=cache, ignore_for_cache=tuple(ignore_for_cache or ()),
                            dfk=self, accepts=accepts,
                            retry_policy=retry_policy or self.config.retry_policy)
        for stream in _STD_STREAMS:
            if kwargs.get(stream) == AUTO_LOGNAME:
                kwargs[stream] = self._std_autopath(record, stream)
        fut = AppFuture(record)
        record.app_fu = fut
        if staging:  # outputs resolve once staged out
            fut._outputs, fut._streams = self.data_manager.stage_outputs(
                label, plan, kwargs, fut, tid)
        else:
            fut._outputs = tuple(DataFuture(fut, f, tid)
                                 for f in kwargs.get("outputs", ()) or ())
        if rejected is not None:
            self._post(k.Rejected(record, rejected))
            return fut
        record.depends = find_futures(record.args, kwargs, self.config.dependency_resolver)
        logger.debug("task %s %s submitted to %s with %d dependencies", tid, func_name, label,
                     len(record.depends))
        self._post(k.Submitted(record))
        return fut

    def _std_autopath(self, record: TaskRecord, stream: str) -> str:
        """Where ``stdout=AUTO_LOGNAME`` (or stderr) goes: ``Config(std_autopath=)``'s choice,
        or Parsl's layout under the run dir, with the call's ``label=`` keyword argument in
        the name when it has one."""
        if self.config.std_autopath is not None:
            return self.config.std_autopath(record, stream)
        label = record.kwargs.get("label")
        return os.path.join(
            self.run_dir, "task_logs", f"{record.id // 10000:04d}",
            f"task_{record.id:04d}_{record.func_name}{'' if label is None else f'_{label}'}"
            f".{stream}")

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

    @property
    def tasks(self) -> dict[int, TaskRecord]:
        """The unfinished tasks, by id."""
        return self._kernel.tasks

    @property
    def task_state_counts(self) -> dict:
        """How many of this DFK's tasks are in each state now (``{States.x: n}``), as Parsl's."""
        return dict(self._kernel.state_counts)  # one C-level copy: consistent

    @property
    def cleanup_called(self) -> bool:
        """Whether :meth:`cleanup` has been called, as Parsl's ``dfk.cleanup_called``."""
        return self._cleaned

    @in_run
    def add_executors(self, executors) -> None:
        """Start more executors on this running DFK (Parsl's ``dfk.add_executors``).

        Raises:
            ConfigurationError: a label is already in use, or is reserved.
        """
        executors = list(executors)
        labels = [e.label for e in executors]
        taken = sorted({lb for lb in labels if lb in self.executors or lb == INTERNAL
                        or labels.count(lb) > 1})
        if taken:
            raise ConfigurationError(
                f"executor labels {taken} are already in use in this DataFlowKernel (or "
                "repeated); give each executor a label of its own")
        for executor in executors:
            executor.start(self._context)
            self.executors[executor.label] = executor
            logger.info("executor %s added", executor.label)

    # ----------------------------------------------------------------- the driver

    def _post(self, event) -> None:
        """Have the kernel handle ``event`` and carry out its instructions.

        One thread at a time drains the run's event queue; a thread that finds another
        draining leaves its event there and returns at once, never waiting on a lock (a
        submitting thread and the result listener would otherwise take turns at every
        task). A future completed by an instruction runs its callbacks in the draining
        thread, and the events they post join the queue: the stack stays flat however many
        tasks complete one another.
        """
        events = self._events
        events.append(event)
        drain = self._drain
        while events and drain.acquire(blocking=False):
            self._drainer = threading.get_ident()
            try:
                while events:
                    event = events.popleft()
                    try:
                        instructions = self._kernel.handle(event)
                    except Exception as e:  # a celeriac bug: fail the task, never hang it
                        logger.exception("handling %s failed", type(event).__name__)
                        record = getattr(event, "record", None)
                        instructions = [] if record is None else [k.SetException(record, e)]
                    for instruction in instructions:
                        try:
                            self._carry_out(instruction)
                        except Exception:  # the queue must still drain
                            logger.exception("carrying out %s failed", instruction)
            finally:
                self._drainer = None
                drain.release()

    def _settle(self) -> None:
        """Wait until every event posted so far has been handled (unless this thread is
        the one handling them, from a callback). A poster never leaves an event behind: a
        drainer looks at the queue again after it lets go."""
        if self._drainer == threading.get_ident():
            return
        while self._events or self._drain.locked():
            time.sleep(0.0005)

    def _carry_out(self, instruction) -> None:
        kind = type(instruction)
        record = getattr(instruction, "record", None)
        if kind is k.Send:
            self._send(instruction)
        elif kind is k.SetResult or kind is k.SetException:
            try:
                if kind is k.SetResult:
                    record.app_fu.set_result(instruction.value)
                else:
                    record.app_fu.set_exception(instruction.exception)
            except InvalidStateError:  # only after a kernel bug already failed it
                logger.error("task %s was completed twice", record.id)
        elif kind is k.SetCancelled:
            record.app_fu.mark_cancelled()
        elif kind is k.Revoke:
            self._revoke(instruction)
        elif kind is k.Watch:
            done = partial(self._post_for, instruction.event, record)
            for fut in instruction.futures:
                getattr(fut, "on_done", fut.add_done_callback)(done)
        elif kind is k.ScheduleRetry:
            self._timers.call_later(instruction.delay, self._post, k.RetryDue(record))
        elif kind is k.Checkpoint:
            self._checkpoint_entry(record, instruction.result)
        else:
            raise TypeError(f"unknown instruction {instruction!r}")

    def _post_for(self, event_type, record: TaskRecord, _fut) -> None:
        self._post(event_type(record))

    def _chain_limit(self, record: TaskRecord) -> int:
        """How many calls of ``record``'s app its executor sends in one message in a row,
        a chain's steps (0: it does not; see :meth:`CeleryLink.chain_limit`)."""
        executor = self.executors.get(record.executor)
        limit = getattr(executor, "chain_limit", None)
        return 0 if limit is None else limit(record.func_name)

    def _send(self, send: k.Send) -> None:
        if send.then:
            self._send_chain(send)
            return
        record = send.record
        call = self._make_call(record, send.args, send.kwargs, send.try_id)
        try:
            exec_fu = self._executor(record.executor).submit(record.func, call,
                                                             record.resource_specification)
        except Exception as e:
            where = (nested_future(send.args, send.kwargs)
                     if isinstance(e, SerializationError) else None)
            if where is not None:
                e = SerializationError(
                    f"{record.func_name}'s {where} holds a Future inside a list, tuple, set or "
                    "dict. Only futures passed directly (or in inputs=) are waited for, so "
                    "this one would be sent unresolved, and a future cannot be sent. Pass it "
                    "directly, or load Config(dependency_resolver=DEEP_DEPENDENCY_RESOLVER) "
                    "to wait for futures inside containers too")
            self._post(k.SubmitFailed(record, send.try_id, e))
            return
        self._tries[record.id] = (send.try_id, exec_fu)
        exec_fu.add_done_callback(partial(self._executor_done, record, send.try_id))

    def _send_chain(self, send: k.Send) -> None:
        """Send a chain's steps in one message; if the executor refuses them together, the
        first goes alone and the others wait for it again (each is then sent on its own,
        and a refusal names the step it is about)."""
        sends = (send, *send.then)
        calls = [self._make_call(s.record, s.args, s.kwargs, s.try_id) for s in sends]
        for call, before in zip(calls[1:], sends):
            call.after = before.record.id
        try:
            futures = self._executor(send.record.executor).submit_chain(
                [(s.record.func, call) for s, call in zip(sends, calls)])
        except Exception as e:
            logger.debug("a chain of %d calls could not go in one message: %r", len(sends), e)
            self._send(k.Send(send.record, send.try_id, send.args, send.kwargs))
            for s in send.then:
                fut = Future()
                fut.set_exception(NotRun(f"task {s.record.id} was not sent with the one "
                                         f"before it: {e}"))
                self._post(k.ExecutorDone(s.record, s.try_id, fut))
            return
        for s, exec_fu in zip(sends, futures):
            self._tries[s.record.id] = (s.try_id, exec_fu)
            exec_fu.add_done_callback(partial(self._executor_done, s.record, s.try_id))

    def _executor_done(self, record: TaskRecord, try_id: int, fut) -> None:
        if self._tries.get(record.id, (None, None))[1] is fut:
            self._tries.pop(record.id, None)
        self._post(k.ExecutorDone(record, try_id, fut))

    # ----------------------------------------------------------------- cancelling

    def cancel(self, fut: AppFuture) -> bool:
        """Cancel the task of ``fut`` (what ``AppFuture.cancel()`` calls).

        A task still waiting never runs; one its executor holds is revoked: dropped from
        its queue, or stopped if it runs. Its dependents fail with ``DependencyError``.

        Returns:
            Whether the future is cancelled (False: it had finished already).
        """
        record = fut.task_record
        if fut.done() or record.dfk is not self:
            return fut.cancelled()
        self._post(k.Cancel(record))
        if self._drainer == threading.get_ident():
            return True  # from a callback: the Cancel is handled right after this event
        self._settle()
        return fut.cancelled()

    def _revoke(self, revoke: k.Revoke) -> None:
        try_id, exec_fu = self._tries.pop(revoke.record.id, (None, None))
        if exec_fu is not None and try_id == revoke.try_id and not exec_fu.cancel():
            logger.info("task %s (%s): executor %r could not stop try %d; its outcome will be "
                        "ignored", revoke.record.id, revoke.record.func_name,
                        revoke.record.executor, try_id)

    def _make_call(self, record: TaskRecord, args, kwargs, try_id: int) -> Call:
        accepts = record.accepts
        if accepts is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in accepts or not _special(k)}
        return Call(task_id=f"{self.run_id}.{record.id}.{try_id}", tid=record.id,
                    name=record.func_name, kind="bash" if record.kind == "bash" else "python",
                    args=args, kwargs=kwargs, walltime=record.walltime,
                    stdout=record.kwargs.get("stdout"), stderr=record.kwargs.get("stderr"),
                    outputs=tuple(record.kwargs.get("outputs", ()) or ()),
                    staging=record.staging or None)

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
            self._settle()
            pending = [r.app_fu for r in list(self.tasks.values())]
            if not pending:
                callbacks.wait_idle()  # the users' done-callbacks of those tasks have run
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
            unfinished = len(self.tasks)
        logger.info("DFK cleanup: %d tasks unfinished", unfinished)
        self._post(k.Closing())
        self._timers.close()
        for executor in reversed(list(self.executors.values())):
            try:
                executor.shutdown()
            except Exception:
                logger.exception("executor %s failed to shut down", executor.label)
        self._internal.shutdown()
        try:
            # Outcomes may still arrive on other threads meanwhile: the kernel decides, in
            # the order events came, which tasks cleanup ends, so each completes once.
            self._post(k.Closed())
            self._settle()
            callbacks.wait_idle()
            summary = ", ".join(f"{state.name} {n}" for state, n in
                                self.task_state_counts.items() if n)
            logger.info("Summary of tasks in DFK: %s", summary or "no tasks")
            if self.config.checkpoint_mode is not None:
                self._flush_checkpoints()
        finally:
            collector.run_ended()
            self._close_monitoring()
            self._checkpoints.close()
            self._context.close()
            atexit.unregister(self.atexit_cleanup)
            from celeriac.orchestrator import loader
            loader.forget(self)

    def _close_monitoring(self) -> None:
        """Stop the progress bar, write the run database, then log the end-of-run summary
        (and print it when stderr is a terminal, as the progress bar is)."""
        if self._progress is not None:
            self._progress.close()
        if self.monitoring is not None:
            self.monitoring.close()
        text = format_summary(self._tally, self.task_state_counts, self.run_dir,
                              self.monitoring and self.monitoring.path)
        logger.info("%s", text)
        if self._progress is not None and self._progress.shown and self._tally.submitted_count:
            print(text, file=sys.stderr, flush=True)

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


def _special(name: str) -> bool:
    return name in _SPECIAL
