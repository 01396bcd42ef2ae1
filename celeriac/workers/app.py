"""The Celery app shared by orchestrator and workers, and the one generic task.

Every app call travels as the registered task ``celeriac.execute`` with ``shadow=<app name>``,
so Flower and worker logs show the user's function name. Its body is a signed frame
(content type ``application/x-celeriac``); the task verifies it before unpickling anything,
and the worker accepts no other content type but JSON (remote control), so Celery never
unpickles anything itself.
"""

from __future__ import annotations

import logging
import pickle
import time

from celery import Celery
from kombu.serialization import register

from celeriac.errors import SerializationError, UntrustedPayload
from celeriac.workers import payload
from celeriac.workers.execute import AppFailed, Failure, run_call
from celeriac.workers.liveness import RunningNotes

logger = logging.getLogger(__name__)

TASK_NAME = "celeriac.execute"
CONTENT_TYPE = "application/x-celeriac"
SERIALIZER = "celeriac"
#: Long enough that kombu never re-delivers a running task by itself: the orchestrator
#: notices dead workers from their heartbeats (see celeriac.orchestrator.recovery).
VISIBILITY_TIMEOUT = 7 * 24 * 3600


def _decode(body: bytes):
    # The body is one signed frame; it stays opaque until the task verifies it.
    return (body,), {}, {}


def _encode(obj) -> bytes:
    args, _kwargs, _embed = obj
    return args[0]


register(SERIALIZER, _encode, _decode, content_type=CONTENT_TYPE, content_encoding="binary")


class WorkerState:
    """What the running worker process knows: its key, and failures waiting to be sent."""

    def __init__(self):
        self.key: bytes | None = None
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


def make_app(broker_url: str, key: bytes | None = None, prefetch_multiplier: int = 4) -> Celery:
    """The Celery app for a run's broker (in a worker, ``key`` is what verifies payloads)."""
    if key is not None:
        state.key = key
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
    app.task(name=TASK_NAME, acks_late=True, ignore_result=False)(execute)
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
        func = state.function(digest, func_bytes)
    except UntrustedPayload as e:
        state.failures[message_id] = e  # cannot be signed: sent back as a plain notice
        raise
    if len(calls) == 1:
        task_id, call_bytes = calls[0]
        start = time.perf_counter()
        try:
            result = run_call(func, payload.loads(call_bytes))
        except AppFailed as e:
            state.failures[task_id] = e.failure.portable()
            raise e.failure.exception from None
        state.runtimes[task_id] = time.perf_counter() - start
        return result
    batch = Batch([_run_one(func, task_id, call_bytes) for task_id, call_bytes in calls])
    failed = len(batch.outcomes) - sum(1 for o in batch.outcomes if o[1])
    if failed:  # so Flower and the worker log show the message as failed
        state.failures[message_id] = batch
        raise PackedCallsFailed(f"{failed} of {len(batch.outcomes)} calls failed; each call's "
                                "own exception goes to its future")
    return batch


class PackedCallsFailed(Exception):
    """Raised after a packed message ran, when some of its calls failed."""


def _run_one(func, task_id: str, call_bytes: bytes) -> tuple:
    """(task id, ok, pickled result or Failure, run time) for one call of a packed message."""
    start = time.perf_counter()
    try:
        value, ok = run_call(func, payload.loads(call_bytes)), True
    except AppFailed as e:
        value, ok = e.failure.portable(), False
    except SerializationError as e:
        value, ok = Failure(e, ""), False
    runtime = time.perf_counter() - start
    try:
        return task_id, ok, payload.dumps(value, "app's result"), runtime
    except SerializationError as e:
        return task_id, False, payload.dumps(Failure(e, "")), runtime


class Batch:
    """The outcomes of a packed message's calls (what Celery sees as its result)."""

    def __init__(self, outcomes: list):
        self.outcomes = outcomes

    def __repr__(self):
        ok = sum(1 for o in self.outcomes if o[1])
        return f"<{len(self.outcomes)} calls: {ok} succeeded, {len(self.outcomes) - ok} failed>"


def _current_id() -> str:
    from celery import current_task
    return current_task.request.id
