"""The result path: one signed frame per task handed to the run (an RPUSH onto its result
list on Redis, a publish to its results queue on RabbitMQ: celeriac.wire.worker_side).

Celery calls this backend for every outcome it knows of (success, the app's exception, a
prefork child lost under a task, a decode error), so nothing a worker sees is dropped. The
orchestrator's single listener pops the list. Compared with Celery's Redis result backend
this skips the GET-before-SET, the per-task key, and the PUBLISH.
"""

from __future__ import annotations

import logging
import socket

import tenacity
from billiard.exceptions import WorkerLostError
from celery import states
from celery.backends.base import BaseBackend

from celeriac.errors import MessageTooLarge, SerializationError, WorkerLost
from celeriac.wire import bigvalues, outcome, payload, worker_side
from celeriac.wire.call import Failure
from celeriac.wire.message import TASK_NAME
from celeriac.workers import transport
from celeriac.workers.app import Batch, state

logger = logging.getLogger(__name__)

#: How long a worker keeps trying to hand in an outcome while the broker is away (restarting,
#: failing over): longer than any restart, so a finished task is not reported as failed.
RESULT_GIVE_UP = 120.0


class ResultListBackend(BaseBackend):
    """Push each outcome of a verified celeriac task to this worker's own run's result list.

    Only outcomes the run's key may vouch for are signed: those of messages whose frame this
    process verified, and the loss of a worker process under one of celeriac's tasks. The
    message's ``reply_to`` is never used: a worker replies to its own run's list only.
    Outcomes Celery reports for anything else (a message naming another task, a forged
    frame) are dropped, so a broker client without the key cannot have them signed.
    """

    supports_native_join = False

    def __init__(self, app, url=None, **kwargs):
        super().__init__(app, **kwargs)
        self._client = None
        self._hostname = socket.gethostname()

    @property
    def side(self) -> worker_side.WorkerSide:
        """This process's way to its run (created lazily: prefork children must not share
        a socket)."""
        if self._client is None:
            self._client = worker_side.for_url(self.app.conf.broker_url, state.run_id)
        return self._client

    @property
    def client(self):
        """A Redis client for the run's records (see :attr:`WorkerSide.records`)."""
        return self.side.records

    def store_result(self, task_id, result, state_name, traceback=None, request=None, **kwargs):
        if not self._vouch(task_id, result, state_name, request):
            state.failures.pop(task_id, None)
            return result
        if state_name == states.SUCCESS:
            if isinstance(result, Batch):
                outcomes = result.outcomes
            else:
                runtime = state.runtimes.pop(task_id, None)
                try:
                    outcomes = [(task_id, True,
                                 bigvalues.dumps_result(result, state.key, state.run_id), runtime)]
                except SerializationError as e:
                    outcomes = [(task_id, False, payload.dumps(Failure(e, "")), runtime)]
        else:
            failure = state.failures.pop(task_id, None)
            if isinstance(failure, Batch):  # a packed message: each call has its outcome
                outcomes = failure.outcomes
            else:
                outcomes = [(task_id, False,
                             self._failure_bytes(failure, result, traceback, request), None)]
        # The values are pickled one by one, so the orchestrator can still tell which task
        # an outcome belongs to when one value cannot be unpickled there. The worker's name
        # (``name@host``) is signed with them: the run database records where each try ran.
        worker = getattr(request, "hostname", None) or self._hostname
        try:
            self._push(task_id, outcome.seal_outcomes(state.key, task_id, outcomes, worker))
        except MessageTooLarge as e:  # over the broker's limit: a failure that says so instead
            failed = [(o[0], False, payload.dumps(Failure(e, "")), o[3]) for o in outcomes]
            self._push(task_id, outcome.seal_outcomes(state.key, task_id, failed, worker))
        return result

    def _push(self, task_id: str, frame: bytes) -> None:
        """Hand ``frame`` to the run (``WorkerSide.push_outcome``), riding out a broker that
        is away for up to ``RESULT_GIVE_UP`` seconds. Meanwhile the task counts as running
        here, so a restarted broker's run does not take it for lost and run it again."""
        held = False
        ack = transport.ack_with_outcome(task_id)
        follow_on = transport.Channel.follow_on if ack is not None else None
        try:
            for attempt in tenacity.Retrying(
                    retry=tenacity.retry_if_exception_type(self.side.errors),
                    wait=tenacity.wait_exponential(multiplier=0.1, max=2.0),
                    stop=tenacity.stop_after_delay(RESULT_GIVE_UP), reraise=True,
                    before_sleep=_say_waiting):
                with attempt:
                    if attempt.retry_state.attempt_number == 2:
                        state.running.note(b"+", task_id)
                        held = True
                    if ack is None:
                        self.side.push_outcome(state.results_key, frame)
                    elif (follow_on is not None and attempt.retry_state.attempt_number == 1
                          and follow_on.taking()):  # and the next message (workers.follow_on)
                        follow_on.hand_in_and_take(state.results_key, frame, ack)
                        transport.acked(ack)
                    elif self.side.push_outcome_and_ack(state.results_key, frame, ack):
                        transport.acked(ack)  # Celery's acknowledgement then costs nothing
        finally:
            if held:
                state.running.note(b"-", task_id)

    def _vouch(self, task_id, result, state_name, request) -> bool:
        """Whether this outcome may be signed with the run's key and sent to the run."""
        verified = task_id in state.verified
        state.verified.discard(task_id)
        if state.results_key is None or state_name not in states.EXCEPTION_STATES | {
                states.SUCCESS} or state_name == states.RETRY:
            return False
        name = getattr(request, "task", None) or getattr(request, "name", None)
        if name != TASK_NAME:
            logger.error("refused a message for task %r (id %s): celeriac workers run only "
                         "%s; nothing is sent back", name, task_id, TASK_NAME)
            return False
        # A prefork pool process that died under a task: its parent never saw the frame.
        return verified or isinstance(result, WorkerLostError)

    def _failure_bytes(self, failure, exc, traceback, request=None) -> bytes:
        if failure is None:
            if isinstance(exc, WorkerLostError):
                worker = getattr(request, "hostname", None) or self._hostname
                exc = WorkerLost(f"a pool process of worker {worker} died while running it: "
                                 f"{exc}")
            failure = Failure(exc, traceback or "").portable()
        try:
            return payload.dumps(failure, "app's exception")
        except Exception as e:  # last resort: say what happened rather than lose the task
            return payload.dumps(Failure(e, failure.traceback))

    def _get_task_meta_for(self, task_id):
        raise NotImplementedError("celeriac results are read by the orchestrator's listener")

    def _forget(self, task_id):
        pass


def _say_waiting(retry_state) -> None:
    if retry_state.attempt_number == 1:
        logger.warning("the broker is unreachable (%s); holding the outcome and trying again "
                       "for up to %.0fs", retry_state.outcome.exception(), RESULT_GIVE_UP)
