"""Celery ``task-sent`` events for the orchestrator's sends, published only while something
listens (a plain ``celery flower`` or ``celery events`` on the run's broker).

The events go through the run's transport (:mod:`celeriac.wire.events` says how each broker
carries them). An event that nobody hears still costs the sender a JSON encoding per task,
so the link asks :meth:`SentEvents.listening` before each batch it sends: at most once a
second that asks the transport whether an event consumer listens
(:meth:`~celeriac.wire.base.Transport.event_listeners`): ``"none"``, nothing is built;
``"some"``, events are on. ``"maybe"`` (Redis: pattern subscribers, which a worker's
remote-control queue is too; RabbitMQ: the ``celeryev`` exchange exists, and cannot say who
is bound to it) is settled by publishing: each publish answers how many consumers got it. So
while it is maybe and the last event reached nobody, each check period sends one batch's
first event only, as a probe; when a probe is heard, the rest of its batch follows and
events are on again.

The events are built as ``celery.events.EventDispatcher`` builds them and published in the
round trip that sends the tasks. Each names its task by its app's name, with the message's
Celery id, and ``parent_id``/``root_id`` linking it to the first task it waited for, so
Flower's task page shows the links. ``tests/integration/test_sent_events.py`` decodes them
with Celery's own ``EventReceiver`` on both brokers, so a kombu or Celery upgrade that changes
the format fails a test.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Mapping, Optional

from celery.utils.time import utcoffset

from celeriac.wire.events import SentEvent

logger = logging.getLogger(__name__)

__all__ = ["SentEvents", "CHECK_SECONDS", "first_dependency"]

#: how often (seconds, at most) the broker is asked whether anything listens
CHECK_SECONDS = 1.0
#: how many task ids' roots are remembered, to give a child its parent's root
ROOTS_KEPT = 100_000


def first_dependency(tasks: Mapping, tid: int) -> Optional[tuple]:
    """``(task id, try)`` of the first task that task ``tid`` waited for, if it did."""
    record = tasks.get(tid)
    depends = record.depends if record is not None else None
    if not depends:
        return None
    parent = getattr(depends[0], "task_record", None)
    return None if parent is None else (parent.id, parent.try_id)


class SentEvents:
    """Decides whether to publish, and builds the events of one batch of sends.

    Args:
        transport: the run's transport (the once-a-second check, a probe's rest).
        hostname: the event's sender, shown by Flower as the task's client.
        run_id: the run's id (the prefix of its tasks' Celery ids).

    ``tasks`` is the DFK's unfinished task records by id (the kernel's), from which a task's
    first dependency is read; it is set by the run's context, and read only while something
    listens.
    """

    def __init__(self, transport, hostname: str, run_id: str):
        self.transport = transport
        self.hostname = hostname
        self.run_id = run_id
        self.tasks: Mapping = {}
        self.published = 0                  # events published so far (for tests and logs)
        self._on = False                    # whether the next batch's events are built
        self._checked = float("-inf")
        self._heard = False                 # whether the last event published reached anyone
        self._probe = False                 # publish one event only, then the rest if heard
        self._rest = []                     # the rest of a probe's batch
        self._clock = 0
        self._pid = os.getpid()
        self._roots: dict[str, str] = {}    # Celery id -> its root's Celery id

    def listening(self) -> bool:
        """Whether the next batch's events should be published (see the module doc)."""
        now = time.monotonic()
        if now - self._checked < CHECK_SECONDS:
            return self._on
        self._checked = now
        try:
            listeners = self.transport.event_listeners()
        except self.transport.errors as e:
            logger.debug("could not ask the broker about event listeners: %s", e)
            self._on = False
            return False
        self._on = listeners != "none"
        self._probe = listeners == "maybe" and not self._heard
        return self._on

    def build(self, sent: list) -> list:
        """The events of ``sent``: ``(celery id, app name, argsrepr, kwargsrepr, queue,
        first call's id)`` per message; a list of :class:`SentEvent`."""
        if self._probe:
            self._probe, self._rest, sent = False, sent[1:], sent[:1]
        out, now, offset = [], time.time(), utcoffset()
        roots = self._roots
        for celery_id, name, argsrepr, kwargsrepr, queue, call_id in sent:
            parent = root = None
            try:  # a call's id is "<run id>.<task id>.<try>"
                found = first_dependency(self.tasks, int(call_id.rsplit(".", 2)[1]))
            except (ValueError, IndexError):
                found = None
            if found is not None:
                parent = f"{self.run_id}.{found[0]}.{max(found[1], 1)}"
                root = roots.get(parent, parent)
            if len(roots) >= ROOTS_KEPT:
                del roots[next(iter(roots))]
            roots[celery_id] = root or celery_id
            self._clock += 1
            tail = celery_id.rsplit(".", 1)[-1]
            body = json.dumps({
                "hostname": self.hostname, "utcoffset": offset, "pid": self._pid,
                "clock": self._clock, "uuid": celery_id, "root_id": root or celery_id,
                "parent_id": parent, "name": name, "args": argsrepr, "kwargs": kwargsrepr,
                "retries": int(tail) - 1 if tail.isdigit() else 0, "eta": None,
                "expires": None, "queue": queue, "exchange": "", "routing_key": queue,
                "timestamp": now, "type": "task-sent"})
            out.append(SentEvent(body, self.hostname, f"{celery_id}.sent"))
        return out

    def heard(self, receivers: list) -> None:
        """How many consumers each event published reached: none reached means nobody listens
        until the next check; a probe that was heard is followed by the rest of its batch."""
        self.published += len(receivers)
        self._heard = any(receivers)
        rest, self._rest = self._rest, []
        if not self._heard:
            self._on = False
        elif rest:
            try:
                self.published += len(self.transport.send({}, self.build(rest)))
            except self.transport.errors as e:  # only events: the tasks were sent
                logger.debug("task-sent events lost: %s", e)
