"""The result path: one RPUSH of a signed frame onto the run's result list per task.

Celery calls this backend for every outcome it knows of (success, the app's exception, a
prefork child lost under a task, a decode error), so nothing a worker sees is dropped. The
orchestrator's single listener pops the list. Compared with Celery's Redis result backend
this skips the GET-before-SET, the per-task key, and the PUBLISH.
"""

from __future__ import annotations

import logging
import socket

import redis
from billiard.exceptions import WorkerLostError
from celery import states
from celery.backends.base import BaseBackend
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from celeriac.errors import SerializationError, UntrustedPayload, WorkerLost
from celeriac.workers import payload
from celeriac.workers.app import Batch, state
from celeriac.workers.execute import Failure

logger = logging.getLogger(__name__)


def redis_client(url: str) -> redis.Redis:
    """A Redis client that rides out short connection drops (5 retries with backoff)."""
    return redis.Redis.from_url(
        url, retry=Retry(ExponentialBackoff(cap=2.0), 5),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        health_check_interval=30)


class ResultListBackend(BaseBackend):
    """Push each task's outcome to the list named by the message's ``reply_to``."""

    supports_native_join = False

    def __init__(self, app, url=None, **kwargs):
        super().__init__(app, **kwargs)
        self._client = None
        self._hostname = socket.gethostname()

    @property
    def client(self) -> redis.Redis:
        if self._client is None:  # created lazily: prefork children must not share a socket
            self._client = redis_client(self.app.conf.broker_url)
        return self._client

    def store_result(self, task_id, result, state_name, traceback=None, request=None, **kwargs):
        reply_to = getattr(request, "reply_to", None) if request is not None else None
        if not reply_to:
            return result
        if state_name == states.SUCCESS:
            if isinstance(result, Batch):
                outcomes = result.outcomes
            else:
                runtime = state.runtimes.pop(task_id, None)
                try:
                    outcomes = [(task_id, True, payload.dumps(result, "app's result"), runtime)]
                except SerializationError as e:
                    outcomes = [(task_id, False, payload.dumps(Failure(e, "")), runtime)]
        elif state_name in states.EXCEPTION_STATES:
            failure = state.failures.pop(task_id, None)
            if isinstance(failure, UntrustedPayload) or isinstance(result, UntrustedPayload):
                self.client.rpush(reply_to, payload.notice(
                    id=task_id, error=str(failure or result), host=self._hostname))
                return result
            if isinstance(failure, Batch):  # a packed message: each call has its outcome
                outcomes = failure.outcomes
            else:
                outcomes = [(task_id, False, self._failure_bytes(failure, result, traceback),
                             None)]
        else:
            return result
        # The values are pickled one by one, so the orchestrator can still tell which task
        # an outcome belongs to when one value cannot be unpickled there.
        self.client.rpush(reply_to, payload.seal(state.key, (task_id, outcomes)))
        return result

    def _failure_bytes(self, failure, exc, traceback) -> bytes:
        if failure is None:
            if isinstance(exc, WorkerLostError):
                exc = WorkerLost(f"the worker process running it on {self._hostname} died: {exc}")
            failure = Failure(exc, traceback or "").portable()
        try:
            return payload.dumps(failure, "app's exception")
        except Exception as e:  # last resort: say what happened rather than lose the task
            return payload.dumps(Failure(e, failure.traceback))

    def _get_task_meta_for(self, task_id):
        raise NotImplementedError("celeriac results are read by the orchestrator's listener")

    def _forget(self, task_id):
        pass

