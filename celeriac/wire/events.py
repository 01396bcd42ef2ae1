"""Celery's ``task-sent`` event as the orchestrator publishes it, encoded for either broker.

Celery's ``EventDispatcher`` publishes each event on the ``celeryev`` exchange with the event
type (``-`` as ``.``) as routing key: on RabbitMQ a durable topic exchange, to which each event
consumer (Flower, ``celery events``) binds a queue of its own with ``#``; on Redis a PUBLISH on
the channel ``/<db>.celeryev/task.sent`` that consumers PSUBSCRIBE. The body is the event
(JSON) and the header ``hostname`` its sender, as Celery sends them, so Celery's own
``EventReceiver`` decodes what :func:`redis_envelope` and :func:`amqp_message` make
(``tests/integration/test_sent_events.py`` checks it on both brokers).
"""

from __future__ import annotations

import base64
import json
from typing import NamedTuple

__all__ = ["EXCHANGE", "ROUTING_KEY", "SentEvent", "redis_envelope", "amqp_message"]

EXCHANGE = "celeryev"        # Celery's ``event_exchange`` default
ROUTING_KEY = "task.sent"    # EventDispatcher: the event type with '-' as '.'


class SentEvent(NamedTuple):
    """One ``task-sent`` event: its body (JSON), its sender, and a tag naming it."""

    body: str
    hostname: str
    tag: str


def redis_envelope(event: SentEvent) -> str:
    """``event`` as kombu's Redis transport publishes it (a JSON envelope, body base64)."""
    return json.dumps({
        "body": base64.b64encode(event.body.encode()).decode(),
        "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"hostname": event.hostname},
        "properties": {"delivery_mode": 1,
                       "delivery_info": {"exchange": EXCHANGE, "routing_key": ROUTING_KEY},
                       "priority": 0, "body_encoding": "base64",
                       "delivery_tag": event.tag}})


def amqp_message(event: SentEvent) -> dict:
    """``event`` as the keyword arguments of a py-amqp ``Message`` (transient, as Celery's
    events are)."""
    return dict(body=event.body.encode(), content_type="application/json",
                content_encoding="utf-8", application_headers={"hostname": event.hostname},
                delivery_mode=1, priority=0)
