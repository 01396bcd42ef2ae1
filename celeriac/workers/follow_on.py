"""Messages a worker takes straight off its queue, one after another, while nobody watches.

Between two messages Celery's solo pool pays its per-task machinery: the outcome's round
trip, the request and its trace, signals and task events, the acknowledgement, a pass of the
event loop, a BRPOP, then the next request. Traced on the 2-core machine that is about 2 ms
a message (outcome 0.6, request and trace 0.6, acknowledgement and loop 0.4, BRPOP and its
bookkeeping 0.3), 25-40 ms of each worker's 5 s in the sleep workload (200 x 50 ms on two
workers, 12-13 messages a worker): the efficiency stayed at 0.984-0.988.

So while the last task event it published reached no one (no Flower, no ``celery events``),
a worker takes its next message in the round trip that hands in the outcome of the one
before (Celery's result backend, or its own): a script moves it from the queue into
kombu's unacked table (:mod:`celeriac.wire.redis_take`), as kombu's BRPOP and its
bookkeeping do in two. When Celery's loop is about to send its next BRPOP, the worker runs
that message instead: it verifies its frame and runs its calls as in any message (their
outcomes handed in as they end: :mod:`~celeriac.workers.hand_in`), then hands in the last
outcomes, acknowledges it and takes the next one. With nothing queued, the round trip takes
nothing, and Celery's BRPOP waits as before: no round trip is added.

It stops, and the next message goes through Celery, when:

- the queue is empty (Celery's BRPOP waits for the next message);
- ``FOLLOW_ON_SECONDS`` have passed since an event last reached no one: Celery's next
  message publishes its events again, so a Flower started meanwhile is seen (while events
  reach someone, every message goes through Celery, and Flower sees each); the loop serves
  remote control and heartbeats then too;
- the worker is told to stop (the message running ends first, as in Celery's warm
  shutdown; one taken and not started goes back to the head of its queue);
- a message is not one it runs itself (another task's, or its frame does not verify): it
  goes back to the head of its queue, and Celery's path handles it (refusing a forged one);
- the broker is away: outcomes are then handed in by the backend's retrying path.

What does not change: which worker runs which message (one is taken when the previous ends,
as BRPOP would), what a dead worker leaves (the message in the unacked table, named in its
held list from when it is taken, found by the run's sweeper), revokes (checked before each call),
and what the run gets (the same signed outcome frames). Redis workers with the solo pool
only (``celeriac worker``'s default); a prefork worker's main process runs no task.
"""

from __future__ import annotations

import base64
import json
import logging
import time

from celeriac.errors import UntrustedPayload
from celeriac.wire import outcome, payload
from celeriac.wire.message import CONTENT_TYPE, TASK_NAME
from celeriac.wire.redis_take import Taker
from celeriac.workers import liveness, transport

logger = logging.getLogger(__name__)

#: Seconds after a task event reached no one during which messages are taken straight off
#: the queue; then one goes through Celery, whose events ask again whether anyone listens.
FOLLOW_ON_SECONDS = 2.0


class FollowOn:
    """Takes a worker's next message in the round trip that hands in the outcome of the one
    before, and runs it straight off the queue (see the module's docstring).

    Installed on the worker's kombu channel (``transport.Channel.follow_on``): called before
    each BRPOP, it runs the message in hand, if any, and those taken after it. The result
    backend hands in a message Celery ran with :meth:`hand_in_and_take` while
    :meth:`taking` says so.
    """

    def __init__(self, state):
        self.state = state
        self.taker: Taker | None = None
        self.queue: str | None = None   # the one queue the worker consumes (else None)
        self._in_hand: tuple[bytes, dict] | None = None  # (as taken, parsed)

    def taking(self) -> bool:
        """Whether the next message is to be taken with this outcome: the worker consumes
        one queue, the last event reached no one within ``FOLLOW_ON_SECONDS``, and the
        worker is not told to stop."""
        unheard_at = transport.events_unheard_at()
        return (self.queue is not None and unheard_at is not None and not _told_to_stop()
                and time.monotonic() < unheard_at + FOLLOW_ON_SECONDS)

    def hand_in_and_take(self, results_key: str, frame: bytes, delivery_tag: str) -> None:
        """Hand in outcome ``frame``, acknowledge ``delivery_tag`` and take the next message
        of the queue (held until the next BRPOP would be sent), in one round trip.

        Raises:
            Taker.errors: the broker did not answer (a message may have been taken: it
                stays in the unacked table, as one kombu's BRPOP took does not).
        """
        self._hold(self._taker().hand_in_and_take(results_key, frame, delivery_tag, self.queue))

    def __call__(self, channel) -> bool:
        """Before a BRPOP: run the message in hand, and those taken after it. True: send no
        BRPOP now, the worker was told to stop meanwhile (Celery's loop stops it when this
        pass ends; a BRPOP would have it run one more message first)."""
        single = len(channel.active_queues) == 1 and not channel.global_keyprefix
        self.queue = next(iter(channel.active_queues)) if single else None
        taken, self._in_hand = self._in_hand, None
        if taken is None:
            return False
        try:
            if self.taking():
                self._run(taken)
            else:  # Flower listens now, or the worker is stopping
                self._give_back(*taken)
        except Taker.errors as e:  # kombu's loop meets the broker's absence too
            logger.info("taking messages straight off queue %s stopped: %s", self.queue, e)
        return _told_to_stop()

    def give_back(self) -> None:
        """Put the message in hand back at the head of its queue (the worker is stopping)."""
        taken, self._in_hand = self._in_hand, None
        if taken is not None:
            try:
                self._give_back(*taken)
            except Taker.errors as e:
                logger.warning("could not put message %s back in its queue (%s): it waits in "
                               "the unacked table", taken[1]["properties"]["delivery_tag"], e)

    def _run(self, taken: tuple[bytes, dict] | None) -> None:
        while taken is not None:
            message_id = taken[1]["properties"]["delivery_tag"]
            opened = self._open(taken[1])
            if opened is None:  # Celery's path handles it (and refuses a forged one)
                self._give_back(*taken)
                return
            try:
                frame = self._run_message(message_id, *opened)
            except Exception:
                logger.exception("running message %s straight off queue %s failed; it goes "
                                 "back to its queue, and no more messages are taken so",
                                 message_id, self.queue)
                self._give_back(*taken)
                transport.Channel.follow_on = None
                return
            try:
                self._hold(self._taker().hand_in_and_take(
                    self.state.results_key, frame, message_id,
                    self.queue if self.taking() else None))
            except Taker.errors:
                self._hand_in_slowly(message_id, frame)
                raise
            finally:
                liveness.held_here.discard(message_id)
            taken, self._in_hand = self._in_hand, None

    def _hold(self, item: bytes | None) -> None:
        if item:  # b"": one without a delivery tag, left in the queue for kombu
            envelope = json.loads(item)
            self._in_hand = item, envelope
            liveness.held_here.add(envelope["properties"]["delivery_tag"])

    def _give_back(self, item: bytes, envelope: dict) -> None:
        tag = envelope["properties"]["delivery_tag"]
        self._taker().give_back(self.queue, item, tag)
        liveness.held_here.discard(tag)

    def _taker(self) -> Taker:
        if self.taker is None:
            self.taker = Taker(self.state.broker_url)
        return self.taker

    def _open(self, envelope: dict):
        """``(function, calls)`` of a celeriac message whose frame verifies, else None."""
        headers, properties = envelope.get("headers") or {}, envelope["properties"]
        if (headers.get("task") != TASK_NAME or envelope.get("content-type") != CONTENT_TYPE
                or properties.get("body_encoding") != "base64"
                or headers.get("id") != properties["delivery_tag"]
                or headers.get("eta") or headers.get("expires")):
            return None
        try:
            digest, func_bytes, calls = payload.unseal(
                self.state.key, base64.b64decode(envelope["body"]))
        except (UntrustedPayload, ValueError, TypeError, KeyError):
            return None
        self.state.key_proven = True
        return self.state.function(digest, func_bytes), calls

    def _run_message(self, message_id: str, func, calls) -> bytes:
        """Run the message's calls; the signed frame of the outcomes still to hand in."""
        from celery import current_app
        from celery._state import _task_stack

        from celeriac.workers.app import run_calls
        self.state.running.note(b"+", message_id)
        # Celery's task context, as its tracer sets it: an app may ask for current_task.
        task = current_app.tasks[TASK_NAME]
        _task_stack.push(task)
        task.push_request(id=message_id, hostname=self.state.hostname, task=TASK_NAME,
                          delivery_info={"exchange": "", "routing_key": self.queue})
        try:
            rest, _count, _failed = run_calls(func, calls, message_id, self.state.hostname)
        finally:
            task.pop_request()
            _task_stack.pop()
            self.state.running.note(b"-", message_id)
        return outcome.seal_outcomes(self.state.key, message_id, rest, self.state.hostname)

    def _hand_in_slowly(self, message_id: str, frame: bytes) -> None:
        """The broker went away: hand the outcome in as the backend does (retrying), and
        acknowledge the message once the broker takes it (``transport.retry_acks``)."""
        from celery import current_app
        current_app.backend._push(message_id, frame)
        transport.ack_later(message_id)


def _told_to_stop() -> bool:
    """Whether Celery's warm or cold shutdown has begun (its flags hold the exit code,
    0 included, as ``celery.worker.state.maybe_shutdown`` reads them)."""
    from celery.worker import state as worker_state
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))
