"""kombu's Redis transport as a worker uses it: a message whose task started is never put back.

kombu keeps each message it delivers in the broker's ``unacked`` table until the worker
acknowledges it, and when a worker's connection closes (the broker restarted, a network
blip) it puts every message the worker has not acknowledged back in its queue. For the
messages the worker had only reserved that is right: Celery drops them when its connection
goes. For a task the worker is running, or has just finished but could not acknowledge
because the broker was gone, it is wrong: the message is delivered again and the task runs a
second time (seen with Redis killed and restarted among 2,000 short tasks). So here:

- an acknowledgement the broker did not take forgets the delivery all the same (the task ran)
  and is kept to be retried (:func:`retry_acks`, from the worker's heartbeat thread);
- when the connection closes, a message whose request the worker has accepted (running, in
  any pool) stays where it is: its outcome comes from this worker, which acknowledges it once
  it is back. Only the others are put back.

Two round trips per task are also spared here (each is a wake-up of Redis and of the worker
on every task, and a chain of dependent tasks pays them in turn):

- a message whose delivery tag is its task id (every message a run sends) is acknowledged in
  the round trip that hands in its outcome (:func:`ack_with_outcome`, from the result
  backend), so Celery's acknowledgement after it costs nothing;
- Celery's task events (``-E``) are published only while something listens (Flower,
  ``celery events``): when an event reached no one, the next ones are dropped for
  ``EVENTS_CHECK`` seconds, then one is published again as a probe.

Workers use it for ``redis://`` brokers (``rediss://`` keeps kombu's own transport).
"""

from __future__ import annotations

import logging
import threading
import time

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from celeriac.wire.redis_recovery import UNACKED, UNACKED_INDEX

logger = logging.getLogger(__name__)

_failed_acks: list[tuple[str, str, str]] = []  # (unacked key, index key, delivery tag)
_failed_lock = threading.Lock()
_own_tags: set = set()       # delivered here, delivery tag == task id: ackable with the outcome
_acked_early: set = set()    # acknowledged with their outcome already

#: seconds task events are not published after one reached no listener
EVENTS_CHECK = 1.0
EVENT_EXCHANGE = "celeryev"  # Celery's ``event_exchange`` default


def ack_with_outcome(task_id: str) -> str | None:
    """The delivery tag to acknowledge with ``task_id``'s outcome, if this process delivered
    its message (None: acknowledge as usual). Call :func:`acked` once the broker took both."""
    return task_id if task_id in _own_tags else None


def acked(delivery_tag: str) -> None:
    """The message ``delivery_tag`` left the unacked table with its outcome."""
    _acked_early.add(delivery_tag)


def for_url(url: str):
    """The transport a worker should use for broker ``url`` (None: kombu's choice)."""
    return Transport if url.startswith("redis://") else None


def ack_later(delivery_tag: str, unacked: str = UNACKED, index: str = UNACKED_INDEX) -> None:
    """Acknowledge ``delivery_tag`` once the broker is back (:func:`retry_acks`)."""
    with _failed_lock:
        _failed_acks.append((unacked, index, delivery_tag))


def retry_acks(client) -> int:
    """Acknowledge again what the broker did not take; returns how many it took now."""
    with _failed_lock:
        pending = list(_failed_acks)
    if not pending:
        return 0
    pipe = client.pipeline()
    for unacked, index, tag in pending:
        pipe.zrem(index, tag).hdel(unacked, tag)
    pipe.execute()  # raises while the broker is still away: they stay pending
    with _failed_lock:
        del _failed_acks[:len(pending)]
    logger.info("acknowledged %d finished tasks once the broker was back", len(pending))
    return len(pending)


def _accepted_ids() -> set:
    """Ids of the requests this worker's pool has accepted and not finished."""
    from celery.worker.state import active_requests
    while True:
        try:
            return {request.id for request in list(active_requests)}
        except RuntimeError:  # changed size while copied (threads pool): again
            continue


class QoS(kombu_redis.QoS):
    def append(self, message, delivery_tag):
        if (message.headers or {}).get("id") == delivery_tag:
            _own_tags.add(delivery_tag)
        super().append(message, delivery_tag)

    def ack(self, delivery_tag):
        _own_tags.discard(delivery_tag)
        if delivery_tag in _acked_early:  # the outcome's round trip took it off the table
            _acked_early.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
            return
        try:
            self._remove_from_indices(delivery_tag).execute()
        except self.channel.connection.connection_errors as e:
            ack_later(delivery_tag, self.unacked_key, self.unacked_index_key)
            logger.warning("the broker did not take the acknowledgement of a finished task "
                           "(%s); it is retried, and the task is not run again", e)
        virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client=None):
        running = _accepted_ids()
        kept = 0
        with self.channel.conn_or_acquire(client) as client:
            for tag, message in list(self._delivered.items()):
                if (message.headers or {}).get("id") in running:
                    kept += 1
                    continue
                self.restore_by_tag(tag, client=client)
                _own_tags.discard(tag)
        self._delivered.clear()
        if kept:
            logger.info("connection closed: %d running tasks stay with this worker", kept)


def events_unheard_at() -> float | None:
    """When (``time.monotonic()``) the last task event this process published reached no
    one (None: it reached someone, or none was published)."""
    return Channel.events_unheard_at


class Channel(kombu_redis.Channel):
    QoS = QoS
    #: when a task event last reached no one (the class's: Celery publishes events on
    #: another channel than the one it consumes on)
    events_unheard_at = None
    #: ``follow_on(channel)``, if set, runs before each BRPOP; True: send none
    #: (celeriac.workers.follow_on)
    follow_on = None

    def _put_fanout(self, exchange, message, routing_key, **kwargs):
        if exchange != EVENT_EXCHANGE or kwargs.get("_publish_batch") is not None:
            return super()._put_fanout(exchange, message, routing_key, **kwargs)
        now = time.monotonic()
        unheard_at = Channel.events_unheard_at
        if unheard_at is not None and now - unheard_at < EVENTS_CHECK:
            return  # nobody listened a moment ago: not worth a round trip
        payload = dumps(message)
        with self.conn_or_acquire() as client:
            heard = sum(client.publish(topic, payload)
                        for topic in self._get_publish_topics(exchange, routing_key))
        Channel.events_unheard_at = None if heard else now

    def _brpop_start(self, timeout=None):
        if Channel.follow_on is not None and self.active_queues and Channel.follow_on(self):
            return  # told to stop while it ran messages: no BRPOP, no message more
        return super()._brpop_start(timeout)


class Transport(kombu_redis.Transport):
    Channel = Channel
