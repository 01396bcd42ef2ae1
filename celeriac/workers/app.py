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
import threading

from celery import Celery
from kombu.serialization import register

from celeriac.errors import UntrustedPayload
from celeriac.workers import payload
from celeriac.workers.execute import AppFailed, Failure, run_call

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
        self.lock = threading.Lock()

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
    """The generic task: verify, unpickle, run one app call, return its result."""
    try:
        digest, func_bytes, call = payload.unseal(state.key, frame)
        func = state.function(digest, func_bytes)
    except UntrustedPayload as e:
        state.failures[_current_id()] = e  # cannot be signed: sent back as a plain notice
        raise
    try:
        return run_call(func, call)
    except AppFailed as e:
        state.failures[call.task_id] = e.failure.portable()
        raise e.failure.exception from None


def _current_id() -> str:
    from celery import current_task
    return current_task.request.id
