"""The dataflow kernel: a pure state machine over task records, events in, instructions out.

:meth:`Kernel.handle` takes one event (a task was submitted, a dependency finished, an
executor reported a try's outcome, a retry is due, the user cancelled a task, the run is
closing), changes the task records, only ever through :meth:`TaskRecord.move`, and returns the
instructions that carry the change out: send a try to an executor, resolve, fail or cancel a
future, revoke a try, wait for other futures, schedule a retry, checkpoint a result. It does
no I/O, starts no thread and never blocks, so a test can feed it events and read its
instructions. The driver (:mod:`.dflow`) carries the
instructions out and turns what happens outside (a future finishing, a timer firing) back into
events, which it handles from a queue, never by recursion: a chain of any length that
completes synchronously (memo hits, failed dependencies, joins) takes constant stack.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any, Optional

from celeriac.errors import CeleriacError, DependencyError, JoinError, NotRun, WorkerLost
from celeriac.orchestrator import retries
from celeriac.orchestrator.dependencies import (
    SHALLOW_DEPENDENCY_RESOLVER,
    describe,
    resolve,
    root_cause,
)
from celeriac.orchestrator.memo import MemoTable, Verdict, make_hash
from celeriac.orchestrator.states import States, TaskRecord
from celeriac.wire.call import Earlier

logger = logging.getLogger(__name__)

__all__ = [
    "Kernel",
    "Submitted", "Rejected", "DependencyDone", "MemoOwnerDone", "ExecutorDone", "SubmitFailed",
    "RetryDue", "JoinedDone", "Cancel", "Closing", "Closed",
    "Send", "SetResult", "SetException", "SetCancelled", "Revoke", "Watch", "ScheduleRetry",
    "Checkpoint",
]

_STD_STREAMS = ("stdout", "stderr")


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Submitted:
    """A new task record; its ``depends`` lists the futures it waits for."""

    record: TaskRecord


@dataclass(frozen=True)
class Rejected:
    """A new task that cannot run at all (its executor refused its resource specification)."""

    record: TaskRecord
    exception: BaseException


@dataclass(frozen=True)
class DependencyDone:
    """One of the futures the task waits for has finished."""

    record: TaskRecord


@dataclass(frozen=True)
class MemoOwnerDone:
    """The identical call whose result the task was waiting for has finished."""

    record: TaskRecord


@dataclass(frozen=True)
class ExecutorDone:
    """The executor's future for try ``try_id`` of the task has finished."""

    record: TaskRecord
    try_id: int
    future: Future


@dataclass(frozen=True)
class SubmitFailed:
    """The executor refused try ``try_id`` of the task."""

    record: TaskRecord
    try_id: int
    exception: BaseException


@dataclass(frozen=True)
class RetryDue:
    """A retry's wait is over."""

    record: TaskRecord


@dataclass(frozen=True)
class JoinedDone:
    """One of the futures a join app returned has finished."""

    record: TaskRecord


@dataclass(frozen=True)
class Cancel:
    """The user cancelled the task (``AppFuture.cancel()``)."""

    record: TaskRecord


@dataclass(frozen=True)
class Closing:
    """Cleanup has begun: executors are shutting down, and cancel what they still hold."""


@dataclass(frozen=True)
class Closed:
    """Executors are shut down: every unfinished task fails."""


# ----------------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Send:
    """Hand try ``try_id`` of the task, with these resolved arguments, to its executor.

    ``then``: Sends of the tasks that wait for this one alone (a chain), to travel in the same
    message and run right after it where it runs, each taking the result of the one before
    (an :class:`~celeriac.wire.call.Earlier` marker in its arguments stands for it)."""

    record: TaskRecord
    try_id: int
    args: tuple
    kwargs: dict
    then: tuple = ()


@dataclass(frozen=True)
class SetResult:
    record: TaskRecord
    value: Any


@dataclass(frozen=True)
class SetException:
    record: TaskRecord
    exception: BaseException


@dataclass(frozen=True)
class SetCancelled:
    """Cancel the task's future: ``cancelled()`` is True, ``result()`` raises CancelledError."""

    record: TaskRecord


@dataclass(frozen=True)
class Revoke:
    """Ask the executor to drop try ``try_id`` of the task if it is queued, or to stop it if
    it runs; whatever it reports for that try afterwards is ignored."""

    record: TaskRecord
    try_id: int


@dataclass(frozen=True)
class Watch:
    """Post ``event(record)`` once for each of ``futures`` when it finishes."""

    record: TaskRecord
    futures: tuple
    event: type


@dataclass(frozen=True)
class ScheduleRetry:
    """Post ``RetryDue(record)`` after ``delay`` seconds."""

    record: TaskRecord
    delay: float


@dataclass(frozen=True)
class Checkpoint:
    """The task's result is final: record it in the run's checkpoint (per checkpoint_mode)."""

    record: TaskRecord
    result: Any


# ----------------------------------------------------------------------------- the kernel


class Kernel:
    """The DFK's decisions over its task records.

    Args:
        retries, retry_handler, worker_lost_retries: Parsl's retry budget (see
            :func:`retries.decide`).
        memo: the memo table, or None when ``app_cache`` is off.
        dependency_resolver: where futures are found in arguments (None: Parsl's shallow
            rule, see :mod:`.dependencies`).
        chain_limit: ``f(record) -> n``: how many calls of the record's app one message may
            carry in a row, a chain's steps (0 or 1: each step waits for the outcome of the
            one before, here); None: never.
        observers: objects told of every task as it is submitted
            (``submitted(record)``) and of every state change
            (``moved(record, start, finish, exception)``, with the try's or the task's
            exception when it failed). They must be quick and do no I/O on the caller's
            thread: the run database and the run's tally queue or count (see
            :mod:`.monitoring`).
    """

    def __init__(self, *, retries: int = 0, retry_handler=None, worker_lost_retries: int = 3,
                 memo: Optional[MemoTable] = None, dependency_resolver=None,
                 chain_limit=None, observers: tuple = ()):
        self.retries = retries
        self.chain_limit = chain_limit
        self.resolver = dependency_resolver
        self.retry_handler = retry_handler
        self.worker_lost_retries = worker_lost_retries
        self.memo = memo
        self.observers = tuple(observers)
        self.tasks: dict[int, TaskRecord] = {}   # unfinished tasks, by id
        self.state_counts = {state: 0 for state in States}  # tasks in each state now
        self.closing = False
        self._handlers = {
            Submitted: self._submitted, Rejected: self._rejected,
            DependencyDone: self._dependency_done,
            MemoOwnerDone: self._memo_owner_done, ExecutorDone: self._executor_done,
            SubmitFailed: self._submit_failed, RetryDue: self._retry_due,
            JoinedDone: self._joined_done, Cancel: self._cancel, Closing: self._closing,
            Closed: self._closed,
        }

    def handle(self, event) -> list:
        """Apply one event; return the instructions that carry it out, in order.

        Raises:
            InvalidTransition: a task was asked to make an illegal move (a celeriac bug).
        """
        return self._handlers[type(event)](event)

    # ------------------------------------------------------------------ waiting to run

    def _move(self, record: TaskRecord, state: States, exception=None) -> None:
        start = record.status
        record.move(state)
        self.state_counts[start] -= 1
        self.state_counts[state] += 1
        for observer in self.observers:
            observer.moved(record, start, state, exception)

    def _new(self, record: TaskRecord) -> None:
        self.state_counts[record.status] += 1
        for observer in self.observers:
            observer.submitted(record)

    def _submitted(self, event: Submitted) -> list:
        record = event.record
        self._new(record)
        self.tasks[record.id] = record
        waiting = tuple(f for f in record.depends if not f.done())
        record.waiting = len(waiting)
        if waiting:
            if len(waiting) == 1 and self.chain_limit is not None:
                self._follow(record, waiting[0])
            return [Watch(record, waiting, DependencyDone)]
        return self._ready(record)

    def _rejected(self, event: Rejected) -> list:
        self._new(event.record)
        return self._finish(event.record, States.failed, exception=event.exception)

    def _dependency_done(self, event: DependencyDone) -> list:
        record = event.record
        record.waiting -= 1  # below 0 when counted again (_wait_again) before this came
        if record.waiting > 0 or record.status is not States.pending:
            return []
        return self._ready(record)

    def _ready(self, record: TaskRecord) -> list:
        """Every dependency is done: fail for a failed one, answer from the memo, or send."""
        args, kwargs, failures = resolve(record.args, record.kwargs, self.resolver)
        record.depends = record.depends[:1]  # the first stays: its task-sent event's parent
        for staged in record.stage_ins:  # its own input could not be staged: its own failure
            if staged.exception() is not None:
                return self._finish(record, States.failed, exception=staged.exception())
        if failures:
            exc = DependencyError(failures, record.id)
            exc.__cause__ = root_cause(failures[0][0])
            return self._finish(record, States.dep_fail, exception=exc)
        record.resolved = (args, kwargs)
        if self.memo is not None and record.cache:
            try:  # keyed on the dependencies' results, now that they are known
                record.hashsum = make_hash(record.func, record.func_name, args, kwargs,
                                           record.ignore_for_cache, record.kind)
            except Exception as e:  # ValueError for a type id_for_memo does not know
                return self._finish(record, States.failed, exception=e)
            return self._claim(record)
        return self._send(record)

    def _claim(self, record: TaskRecord) -> list:
        try:
            verdict, value = self.memo.claim(record.hashsum, record.app_fu)
        except Exception as e:
            return self._finish(record, States.failed, exception=e)
        if verdict is Verdict.hit:
            return self._finish(record, States.memo_done, result=value)
        if verdict is Verdict.failed:  # as in Parsl, an identical call's failure is reused
            return self._finish(record, States.failed, exception=value)
        if verdict is Verdict.wait:  # an identical call is in flight: take its result, or run
            return [Watch(record, (value,), MemoOwnerDone)]
        return self._send(record)

    def _memo_owner_done(self, event: MemoOwnerDone) -> list:
        if event.record.status is not States.pending:
            return []
        return self._claim(event.record)

    def _send(self, record: TaskRecord) -> list:
        record.try_id += 1  # first: observers see the move with the try's number
        self._move(record, States.launched)
        if record.started is None:
            record.started = time.monotonic()
        args, kwargs = record.resolved
        then = self._chain(record) if record.followers else ()
        return [Send(record, record.try_id, args, kwargs, then)]

    # ------------------------------------------------------------------ chains

    def _follow(self, record: TaskRecord, future) -> None:
        """Note ``record``, which waits for ``future`` alone, as a follower of its task if the
        two could travel in one message (python apps of one executor, nothing to stage, no
        memo)."""
        lead = getattr(future, "task_record", None)
        if lead is None or lead.app_fu is not future or self.tasks.get(lead.id) is not lead:
            return
        if not (record.kind == "python" and lead.kind == "python"
                and record.executor == lead.executor and not record.stage_ins
                and record.staging is None and not (self.memo is not None and record.cache)
                and self.resolver in (None, SHALLOW_DEPENDENCY_RESOLVER)
                and record.resource_specification == lead.resource_specification):
            return
        if lead.followers is None:
            lead.followers = [record]
        else:
            lead.followers.append(record)

    def _chain(self, lead: TaskRecord) -> tuple:
        """Launch, after ``lead``, the tasks that wait for it alone, one after another (as
        many as ``chain_limit`` lets one message carry: a step of an app of which n fit
        takes 1/n of it), and return their Sends. A task with several such followers is not
        chained further: they can run in parallel elsewhere."""
        room = 1.0 - _share(self.chain_limit(lead))
        then = []
        while True:
            live = [f for f in lead.followers or () if f.status is States.pending]
            lead.followers = live
            if len(live) != 1 or live[0].waiting != 1:
                break
            record = live[0]
            share = _share(self.chain_limit(record))
            if share > room + 1e-9:
                break
            room -= share
            marked = _marked(record.args, record.kwargs, lead.app_fu, Earlier(lead.id))
            args, kwargs, failures = resolve(*marked, self.resolver)
            if failures:  # another dependency failed: it fails once the lead is done
                break
            record.try_id += 1
            self._move(record, States.launched)
            if record.started is None:
                record.started = time.monotonic()
            record.after = lead
            then.append(Send(record, record.try_id, args, kwargs))
            lead = record
        return tuple(then)

    def _unchain(self, lead: TaskRecord) -> list:
        """Take back the tasks launched after ``lead`` in its message (it is being cancelled:
        they must not run with its result): revoked, and waiting for it again."""
        out = []
        for record in lead.followers or ():
            if record.after is lead and record.status is States.launched:
                out += self._unchain(record)
                out.append(Revoke(record, record.try_id))
                record.after = None
                self._move(record, States.pending)
                record.waiting = sum(1 for f in record.depends if not f.done())
        return out

    def _wait_again(self, record: TaskRecord) -> list:
        """A chained task did not run (the one before it failed, was lost, or was not run):
        it waits, as any dependent task, for its dependencies' final outcomes."""
        record.after = None
        self._move(record, States.pending)
        record.waiting = sum(1 for f in record.depends if not f.done())
        return [] if record.waiting else self._ready(record)

    # ------------------------------------------------------------------ outcomes

    def _current(self, record: TaskRecord, try_id: int) -> bool:
        """Whether an outcome is for the task's latest try, still running."""
        return try_id == record.try_id and record.status is States.launched

    def _submit_failed(self, event: SubmitFailed) -> list:
        if not self._current(event.record, event.try_id):
            return []
        logger.info("task %s could not be submitted: %s", event.record.id, event.exception)
        return self._finish(event.record, States.failed, exception=event.exception)

    def _executor_done(self, event: ExecutorDone) -> list:
        record, fut = event.record, event.future
        if not self._current(record, event.try_id):
            return []  # an outcome for a try that was already superseded
        if fut.cancelled():
            if self.closing:  # the executor dropped it while shutting down; Closed fails it
                return []
            # Revoked outside this process (Flower, `celery control revoke`): someone meant
            # to stop it, so it ends cancelled and is never retried.
            logger.warning("task %s (%s) was revoked on executor %r: it ends cancelled, "
                           "without a retry", record.id, record.func_name, record.executor)
            return self._finish(record, States.cancelled)
        exc = fut.exception()
        if exc is not None and record.after is not None:  # a chained try that failed
            if isinstance(exc, (NotRun, WorkerLost)) or not all(f.done() for f in record.depends):
                return self._wait_again(record)
            args, kwargs, failures = resolve(record.args, record.kwargs, self.resolver)
            if failures:
                return self._wait_again(record)
            record.resolved = (args, kwargs)  # for its retry, sent on its own
        record.after = None
        if exc is None:
            if record.kind == "join":
                return self._join(record, fut.result())
            return self._finish(record, States.exec_done, result=fut.result())
        return self._failed_try(record, exc)

    def _failed_try(self, record: TaskRecord, exc: BaseException) -> list:
        try:
            decision = retries.decide(
                record, exc, retries=self.retries, retry_handler=self.retry_handler,
                policy=record.retry_policy, worker_lost_retries=self.worker_lost_retries)
        except Exception as handler_exc:
            logger.exception("the retry handler or policy failed for task %s", record.id)
            return self._finish(record, States.failed, exception=handler_exc)
        if decision.lost_free:
            logger.warning("task %s (%s): %s; relaunching it (lost-worker relaunch %d of %d, "
                           "no retry spent)", record.id, record.func_name, exc,
                           record.lost_count, self.worker_lost_retries)
        elif decision.retry:
            logger.info("task %s (%s) failed on try %d (%r); retrying in %.3g s", record.id,
                        record.func_name, record.try_id, exc, decision.delay)
        if decision.retry:
            self._move(record, States.pending, exc)
            if decision.delay > 0:  # a timer posts RetryDue: nothing blocks meanwhile
                return [ScheduleRetry(record, decision.delay)]
            return self._send(record)
        if record.try_id > 1:
            _add_note(exc, f"celeriac: task {record.id} ({record.func_name}) failed after "
                           f"{record.try_id} tries; this is the error of the last one")
        logger.info("task %s (%s) failed after %d tries: %r", record.id, record.func_name,
                    record.try_id, exc)
        return self._finish(record, States.failed, exception=exc)

    def _retry_due(self, event: RetryDue) -> list:
        if event.record.status is not States.pending:  # cleanup ended it meanwhile
            return []
        return self._send(event.record)

    def _join(self, record: TaskRecord, inner) -> list:
        futures = tuple(inner) if isinstance(inner, (list, tuple)) else (inner,)
        if not all(isinstance(f, Future) for f in futures):
            return self._finish(record, States.failed, exception=TypeError(
                f"join_app {record.func_name} must return a Future or a list of Futures, "
                f"not {type(inner).__name__}"))
        self._move(record, States.joining)
        record.resolved = (inner,)
        if not futures:
            return self._finish(record, States.exec_done, result=[])
        record.waiting = len(futures)
        return [Watch(record, futures, JoinedDone)]

    def _joined_done(self, event: JoinedDone) -> list:
        record = event.record
        record.waiting -= 1
        if record.waiting or record.status is not States.joining:
            return []
        (inner,) = record.resolved
        futures = inner if isinstance(inner, (list, tuple)) else [inner]
        failures = [(CancelledError() if f.cancelled() else f.exception(), describe(f))
                    for f in futures if f.cancelled() or f.exception() is not None]
        if failures:
            exc = JoinError(failures, record.id)
            exc.__cause__ = failures[0][0]
            return self._finish(record, States.failed, exception=exc)
        result = [f.result() for f in futures] if futures is inner else futures[0].result()
        return self._finish(record, States.exec_done, result=result)

    # ------------------------------------------------------------------ cancelling

    def _cancel(self, event: Cancel) -> list:
        """End an unfinished task as cancelled; a try an executor holds is revoked first.

        A waiting task never runs: the events it waits for find it no longer pending. A
        running join app's inner futures run on (they are tasks of their own).
        """
        record = event.record
        if self.tasks.get(record.id) is not record:  # finished already: nothing to cancel
            return []
        out = self._unchain(record)
        if record.status is States.launched:
            out.append(Revoke(record, record.try_id))
        logger.info("task %s (%s) cancelled while %s", record.id, record.func_name,
                    record.status.name)
        return out + self._finish(record, States.cancelled)

    # ------------------------------------------------------------------ endings

    def _finish(self, record: TaskRecord, state: States, result=None, exception=None) -> list:
        self._move(record, state, exception)
        self.tasks.pop(record.id, None)
        out = []
        if record.hashsum is not None and state in (States.exec_done, States.memo_done):
            out.append(Checkpoint(record, result))
        # Keep a finished record small: drop what only running needed, so memory stays flat.
        record.args = ()
        record.depends = []
        record.resolved = None
        record.followers = record.after = None
        record.kwargs = {k: record.kwargs[k] for k in _STD_STREAMS if k in record.kwargs}
        if state is States.cancelled:
            out.append(SetCancelled(record))
        elif exception is not None:
            logger.debug("task %s %s: %s", record.id, state.name, exception)
            out.append(SetException(record, exception))
        else:
            logger.debug("task %s %s", record.id, state.name)
            out.append(SetResult(record, result))
        return out

    def _closing(self, _event: Closing) -> list:
        self.closing = True
        return []

    def _closed(self, _event: Closed) -> list:
        out = []
        for record in list(self.tasks.values()):
            out += self._finish(record, States.failed, exception=CeleriacError(
                f"task {record.id} ({record.func_name}) had not finished when the "
                "DataFlowKernel was cleaned up; wait for results before cleanup, or use "
                "exit_mode='wait'"))
        return out


def _share(limit: int) -> float:
    """The part of a message one call takes when ``limit`` such calls fill it (1: a whole
    one, for 0: an app whose run time is not known yet)."""
    return 1.0 / limit if limit > 0 else 1.0


def _marked(args, kwargs, future, marker):
    """``args`` and ``kwargs`` with ``future`` replaced by ``marker`` where Parsl's shallow
    rule finds futures (arguments, keyword values, items of ``inputs``)."""
    def mark(value):
        return marker if value is future else value
    kwargs = {k: mark(v) for k, v in kwargs.items()}
    inputs = kwargs.get("inputs")
    if isinstance(inputs, (list, tuple)):
        kwargs["inputs"] = type(inputs)(mark(v) for v in inputs)
    return tuple(mark(a) for a in args), kwargs


def _add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (no add_note; notes kept all the same)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]
