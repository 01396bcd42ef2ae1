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

Workers use it for ``redis://`` brokers (``rediss://`` keeps kombu's own transport).
"""

from __future__ import annotations

import logging
import threading

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

logger = logging.getLogger(__name__)

_failed_acks: list[tuple[str, str, str]] = []  # (unacked key, index key, delivery tag)
_failed_lock = threading.Lock()


def for_url(url: str):
    """The transport a worker should use for broker ``url`` (None: kombu's choice)."""
    return Transport if url.startswith("redis://") else None


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
    def ack(self, delivery_tag):
        try:
            self._remove_from_indices(delivery_tag).execute()
        except self.channel.connection.connection_errors as e:
            with _failed_lock:
                _failed_acks.append((self.unacked_key, self.unacked_index_key, delivery_tag))
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
        self._delivered.clear()
        if kept:
            logger.info("connection closed: %d running tasks stay with this worker", kept)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
