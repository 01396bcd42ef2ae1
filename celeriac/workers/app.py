"""The Celery app a worker runs, and the one generic task (its name and body: wire.message).

Every app call travels as the registered task ``celeriac.execute`` with ``shadow=<app name>``,
so Flower and worker logs show the user's function name. Its body is a signed frame
(content type ``application/x-celeriac``); the task verifies it before unpickling anything,
and the worker accepts no other content type but JSON (remote control), so Celery never
unpickles anything itself. It is the only task a worker knows: Celery's built-in tasks
(``celery.accumulate``, ``celery.map``, ...) are unregistered, so a message naming one is
refused with a log line, never run.
"""

from __future__ import annotations

import logging
import pickle
import time

from celery import Celery

from celeriac.errors import NotRun, SerializationError, UntrustedPayload, WorkerLost
from celeriac.wire import bigvalues, payload
from celeriac.wire.call import AppFailed, Failure
from celeriac.wire.message import SERIALIZER, TASK_NAME
from celeriac.workers import hand_in, refusal
from celeriac.workers.execute import run_call
from celeriac.workers.liveness import RunningNotes
from celeriac.workers.ready_first import ReadyFirst

logger = logging.getLogger(__name__)

#: Long enough that kombu never re-delivers a running task by itself: the orchestrator
#: notices dead workers from their heartbeats (see celeriac.wire.redis_recovery).
VISIBILITY_TIMEOUT = 7 * 24 * 3600


class WorkerState:
    """What the running worker process knows: its key and run, and outcomes waiting to be sent."""

    def __init__(self):
        self.key: bytes | None = None
        self.run_id: str | None = None
        self.results_key: str | None = None  # the only list this worker replies to
        self.verified: set[str] = set()      # messages whose frame this process verified
        self.key_proven = False              # a frame has verified: the key is the run's
        self.main_pid: int | None = None     # the worker's main process (prefork: the parent)
        self.broker_url: str | None = None
        self.hostname: str | None = None     # the Celery worker's name (name@host)
        self.functions: dict[str, object] = {}
        self.failures: dict[str, Failure] = {}
        self.runtimes: dict[str, float] = {}
        self.running = RunningNotes()  # replaced in a worker process (run_worker)

    def function(self, digest: str, data: bytes):
        """Unpickle an app's function once per worker process (calls repeat it)."""
        func = self.functions.get(digest)
        if func is None:  # the bytes came inside a verified frame
            func = pickle.loads(data)
            if len(self.functions) > 256:
                self.functions.clear()
            self.functions[digest] = func
        return func


state = WorkerState()


def default_prefetch(broker_url: str) -> int:
    """Messages a worker holds per pool slot unless told: 2 on Redis, 1 on RabbitMQ.

    RabbitMQ pushes messages to a consumer up to its prefetch count; a worker that is stopped
    (SIGSTOP) keeps receiving them without being able to say it holds them, so they would
    wait for it unseen. With late acks and 1 per slot, a slot running a task gets no more."""
    return 1 if str(broker_url).startswith(("amqp", "pyamqp")) else 2


def make_app(broker_url: str, key: bytes | None = None, prefetch_multiplier: int | None = None,
             run_id: str | None = None) -> Celery:
    """The Celery app for a run's broker (in a worker, ``key`` is what verifies payloads and
    ``run_id`` names the one results list it replies to; ``prefetch_multiplier`` None:
    :func:`default_prefetch`)."""
    if prefetch_multiplier is None:
        prefetch_multiplier = default_prefetch(broker_url)
    from celeriac.wire.keys import results_key
    state.broker_url = broker_url
    if key is not None:
        state.key = key
    if run_id is not None:
        state.run_id, state.results_key = run_id, results_key(run_id)
    app = Celery("celeriac", set_as_current=True)
    app.conf.update(
        broker_url=broker_url,
        result_backend="celeriac.workers.backend:ResultListBackend",
        # Task bodies must be our signed frames; JSON (which runs no code) is for remote
        # control (Flower's inspect, `celery inspect`). Never pickle.
        accept_content=[SERIALIZER, "json"],
        result_accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=False,  # the orchestrator relaunches; it counts losses
        worker_prefetch_multiplier=prefetch_multiplier,
        worker_send_task_events=True,
        worker_disable_rate_limits=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.steps["worker"].add(ReadyFirst)  # acks go out before the loop waits (ready_first)
    app.task(name=TASK_NAME, acks_late=True, ignore_result=False)(execute)
    for name in [n for n in app.tasks if n != TASK_NAME]:
        app.tasks.unregister(name)  # Celery's built-ins: never run from the network
    return app


def execute(frame: bytes):
    """The generic task (see :func:`_execute`), noting to the supervisor while it runs."""
    task_id = _current_id()
    state.running.note(b"+", task_id)
    try:
        return _execute(frame, task_id)
    finally:
        state.running.note(b"-", task_id)


def _execute(frame: bytes, message_id: str):
    """The generic task: verify the frame, then run the call(s) it carries.

    A message with one call returns its result or raises its exception, so Celery (and
    Flower) see the app's own outcome. A packed message runs each call and returns a
    :class:`Batch` of their outcomes; one failing call does not fail the others.
    """
    try:
        digest, func_bytes, calls = payload.unseal(state.key, frame)
    except UntrustedPayload as e:
        from celery import current_app, current_task
        refusal.refuse(state, current_app.backend.side, message_id,
                       current_task.request.hostname, e)
        raise
    state.key_proven = True
    state.verified.add(message_id)  # the backend signs outcomes for these messages only
    given_back = _given_back()
    if given_back:  # the run relaunches each call as a new try, as after any lost worker
        failure = payload.dumps(Failure(WorkerLost(given_back), ""))
        state.failures[message_id] = Batch([(c[0], False, failure, None) for c in calls])
        raise WorkerLost(given_back)
    func = state.function(digest, func_bytes)
    if len(calls) == 1:
        task_id, call_bytes = calls[0]
        start = time.perf_counter()
        try:
            call = bigvalues.loads(call_bytes, state.key, state.run_id)
            if call.after is not None:  # a chain's step without the step before it
                raise AppFailed(Failure(_not_run_after(call), ""))
            result = run_call(func, call)
        except AppFailed as e:
            state.failures[task_id] = e.failure.portable()
            raise e.failure.exception from None
        state.runtimes[task_id] = time.perf_counter() - start
        return result
    from celery import current_task
    batch = Batch(*run_calls(func, calls, message_id, current_task.request.hostname))
    if batch.failed:  # so Flower and the worker log show the message as failed
        state.failures[message_id] = batch
        raise PackedCallsFailed(f"{batch.failed} of {batch.count} calls failed; each call's "
                                "own exception goes to its future")
    return batch


def run_calls(func, calls: list, message_id: str, worker: str) -> tuple[list, int, int]:
    """Run the calls of message ``message_id`` in order, handing in their outcomes as they
    end (:mod:`~celeriac.workers.hand_in`); returns ``(outcomes still to go with the
    message's end, calls, failed calls)``."""
    revoked, outcomes = _revoked(), hand_in.Outcomes(state, message_id, len(calls), worker)
    results: dict = {}  # tid -> result of the calls that succeeded, for the steps after them
    try:
        for call in calls:  # (id, bytes[, function])
            outcomes.add(_not_run(call[0]) if call[0] in revoked else
                         _run_one(func if len(call) == 2 else state.function(*call[2:]),
                                  call[0], call[1], results))
    finally:
        rest = outcomes.rest()  # what went early reached the broker before the end goes
    return rest, outcomes.count, outcomes.failed


class PackedCallsFailed(Exception):
    """Raised after a packed message ran, when some of its calls failed."""


def _run_one(func, task_id: str, call_bytes: bytes, results: dict) -> tuple:
    """(task id, ok, pickled result or Failure, run time) for one call of a packed message;
    a chain's step takes the result of the step before it from ``results`` (and is not run
    if that one did not succeed), and a call that succeeds leaves its result there."""
    start = time.perf_counter()
    try:
        call = bigvalues.loads(call_bytes, state.key, state.run_id)
        if call.after is not None:
            if call.after not in results:
                raise AppFailed(Failure(_not_run_after(call), ""))
            call = call.filled(results[call.after])
        value, ok = run_call(func, call), True
        results[call.tid] = value
    except AppFailed as e:
        value, ok = e.failure.portable(), False
    except SerializationError as e:
        value, ok = Failure(e, ""), False
    runtime = time.perf_counter() - start
    try:
        return task_id, ok, bigvalues.dumps_result(value, state.key, state.run_id), runtime
    except SerializationError as e:
        return task_id, False, payload.dumps(Failure(e, "")), runtime


def _not_run_after(call) -> NotRun:
    return NotRun(f"task {call.tid} ({call.name}) was not run: task {call.after}, whose result "
                  "it takes and which came before it in its message, failed or was not run")


def _given_back() -> str | None:
    """Why the message being run was given back by RabbitMQ, if it was (None: it was not,
    or the broker is Redis, whose lost messages the run takes back itself).

    With late acks RabbitMQ gives a message back to its queue when the connection of the
    worker holding it closes (the worker was killed, ran out of memory, lost its node, or
    the broker restarted), and marks it redelivered. Running it now could run it twice;
    saying so lets the run relaunch it as a new try, counted as a lost worker."""
    from celery import current_app, current_task
    if not str(current_app.conf.broker_url).startswith(("amqp", "pyamqp")):
        return None
    if not (current_task.request.delivery_info or {}).get("redelivered"):
        return None
    return ("its worker died while holding it (killed, out of memory, or its node was "
            "lost), or the broker restarted: RabbitMQ gave the message back when the "
            "worker's connection closed")


def _revoked():
    """The ids this worker knows its run revoked (its signed revokes, put into Celery's
    revoked set by the worker's heartbeat thread; see workers.cancel.revoke_follower)."""
    from celery.worker import state as worker_state
    return worker_state.revoked


def _not_run(task_id: str) -> tuple:
    """The outcome of a revoked call of a packed message: not run (its run, which revoked
    it, has already ended it as cancelled and ignores this)."""
    from celeriac.errors import CeleriacError
    return task_id, False, payload.dumps(Failure(CeleriacError(
        f"call {task_id} was revoked by its run before it started; it was not run"), "")), 0.0


class Batch:
    """The outcomes of a packed message's calls still to be sent with its end (what Celery
    sees as its result), of ``count`` calls of which ``failed`` failed (None: of these)."""

    def __init__(self, outcomes: list, count: int | None = None, failed: int | None = None):
        self.outcomes = outcomes
        self.count = len(outcomes) if count is None else count
        self.failed = sum(1 for o in outcomes if not o[1]) if failed is None else failed

    def __repr__(self):
        return (f"<{self.count} calls: {self.count - self.failed} succeeded, "
                f"{self.failed} failed>")


def _current_id() -> str:
    from celery import current_task
    return current_task.request.id
