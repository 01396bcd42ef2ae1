"""Hearing Celery's remote-control broadcast: the revokes and terminates that Flower (or
``celery control revoke``) sends, so a run can end the named tasks as cancelled, even ones no
worker has taken yet.

On security: workers never obey remote-control revokes, since anyone on the broker can send
one. The run accepts them for its own unfinished tasks, because all one can do is end a task
as cancelled: it cannot decide a result or run code, and a client that can reach the broker
can already stop a run by deleting its queues. The outcomes the run accepts are still only
the ones a worker signed with the run's key, and workers stop a task only on a revoke signed
with it (:mod:`celeriac.wire.revokes`).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from typing import Callable

logger = logging.getLogger(__name__)

#: the exchange of Celery's remote-control broadcast (kombu's Redis fanout: the channel
#: ``/<db>.celery.pidbox``; subscribed by name, not by pattern, so that the pattern count
#: still tells whether an event consumer such as Flower listens, see sent_events)
PIDBOX_EXCHANGE = "celery.pidbox"


def revoked_ids(data) -> list:
    """The task ids a remote-control broadcast (kombu's JSON envelope) revokes, if any."""
    try:
        envelope = json.loads(data)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        command = json.loads(body)
        if command.get("method") not in ("revoke", "terminate"):
            return []
        ids = command.get("arguments", {}).get("task_id")
    except (TypeError, ValueError, KeyError, AttributeError):
        return []
    ids = [ids] if isinstance(ids, str) else ids
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def listen(transport, stop: threading.Event, revoke: Callable[[str, str], bool]) -> None:
    """Until ``stop`` is set, call ``revoke(task_id, why)`` for each task a broadcast revokes
    (riding out a broker that goes away)."""
    pubsub = None
    while not stop.is_set():
        try:
            if pubsub is None:
                pubsub = transport.listen_broadcast(PIDBOX_EXCHANGE)
            message = pubsub.get_message(timeout=0.2)  # short: the run's cleanup joins this
        except transport.errors as e:
            logger.debug("remote-control listener: %s", e)
            pubsub = None
            stop.wait(1.0)
            continue
        if message is not None:
            for task_id in revoked_ids(message.get("data")):
                if revoke(task_id, "revoked with Celery's remote control (Flower or `celery "
                                   "control revoke`)"):
                    logger.warning("task %s was revoked with Celery's remote control: it ends "
                                   "cancelled and is not retried", task_id)
    if pubsub is not None:
        try:
            pubsub.close()
        except transport.errors:
            pass
