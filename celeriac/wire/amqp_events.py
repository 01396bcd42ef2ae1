"""Celery ``task-sent`` events on RabbitMQ: whether anyone may hear them, and publishing them.

An event consumer binds a queue of its own to Celery's ``celeryev`` topic exchange, which
AMQP gives no cheap way to list. So :func:`exchange_exists` answers "maybe" at best, and
:func:`publish` settles it: each event is published *mandatory*, and the broker returns,
before the transaction's commit is confirmed, each one that no queue took.
"""

from __future__ import annotations

from typing import Callable

import amqp

from celeriac.wire.events import EXCHANGE, ROUTING_KEY, SentEvent, amqp_message

__all__ = ["exchange_exists", "publish"]


def exchange_exists(conn) -> bool:
    """Whether Celery's event exchange exists on the broker of kombu connection ``conn``
    (a passive declare, on a channel of its own since a miss closes the channel)."""
    channel = conn.channel()
    try:
        channel.exchange_declare(EXCHANGE, "topic", passive=True)
        return True
    except amqp.exceptions.NotFound:
        return False
    finally:
        try:
            channel.close()
        except Exception:  # closed by the miss already
            pass


def publish(channel, events: list[SentEvent]) -> Callable[[], list[int]]:
    """Publish ``events`` (mandatory) on py-amqp ``channel``, in its transaction.

    Returns:
        What to call once the transaction is committed: for each event, 1 if a consumer's
        queue took it, 0 if the broker returned it.
    """
    returned = getattr(channel, "_celeriac_returned", None)
    if returned is None:
        returned = channel._celeriac_returned = []
        channel.events["basic_return"].add(
            lambda _exc, exchange, _key, _message: returned.append(exchange))
    returned.clear()
    for event in events:
        channel.basic_publish(amqp.Message(**amqp_message(event)), exchange=EXCHANGE,
                              routing_key=ROUTING_KEY, mandatory=True)

    def receivers() -> list[int]:
        unheard = returned.count(EXCHANGE)
        return [int(i >= unheard) for i in range(len(events))]
    return receivers
