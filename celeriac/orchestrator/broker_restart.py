"""What a broker restart means for a run's unfinished tasks: relaunch only those it lost.

The broker may have kept its data (AOF, RDB, durable RabbitMQ queues) or lost it. When the
link's watcher sees the broker's instance change, the unfinished messages the broker no
longer has (in no queue, held by no live worker) are noted, and checked again
``RESTART_RECHECK`` seconds later, once every outcome then waiting has been delivered:
a worker may have held an outcome while the broker was away. Those still missing are
failed with WorkerLost, which the DFK relaunches as a new try.
"""

from __future__ import annotations

import logging
import time

from celeriac.errors import WorkerLost

logger = logging.getLogger(__name__)

RESTART_RECHECK = 3.0  # > a worker's held-list interval: a task in a worker's hands shows


class BrokerRestart:
    """The restart check of one link (``CeleryLink``), driven by its watcher thread."""

    def __init__(self, link):
        self.link = link
        self._pending = None  # (seen at, message ids missing, unfinished) while checking

    def noticed(self) -> None:
        """The broker restarted: note which unfinished messages it no longer has."""
        link = self.link
        try:
            link._register_run()  # a broker that lost its data forgot the run too
        except link.transport.errors:
            pass
        outstanding = unfinished_messages(link)
        found, _unacked = link.transport.whereabouts(link._queues)
        missing = set(outstanding) - found
        if not missing:
            self._relaunch([], len(outstanding))
            self._pending = None
            return
        logger.info("the broker at %s restarted; %d of %d unfinished tasks are neither queued "
                    "nor held by a worker; checking them again in %.0fs", link.shown_url,
                    len(missing), len(outstanding), RESTART_RECHECK)
        self._pending = (time.monotonic(), missing, len(outstanding))

    def recheck(self) -> None:
        """Relaunch the messages still missing ``RESTART_RECHECK`` seconds after the restart
        was seen, once every outcome then waiting has been delivered. A message in the
        unacked table but held by no live worker is taken from the table first (its worker
        is gone, or dropped it when the broker went away)."""
        if self._pending is None:
            return
        since, missing, unfinished = self._pending
        link = self.link
        if time.monotonic() - since < RESTART_RECHECK or link._drained_at < since:
            return
        outstanding = unfinished_messages(link)
        found, unacked = link.transport.whereabouts(link._queues)
        lost = [m for m in missing if m in outstanding and m not in found]
        lost = [m for m in lost if m not in unacked or link.transport.take_back(unacked[m])]
        self._relaunch(lost, unfinished)
        self._pending = None

    def _relaunch(self, lost: list, unfinished: int) -> None:
        logger.warning("the broker at %s restarted; relaunching %d unfinished tasks that it "
                       "lost (of %d unfinished; the others were still queued, held by a "
                       "worker, or finished)", self.link.shown_url, len(lost), unfinished)
        for message_id in lost:
            self.link._complete(message_id, exception=WorkerLost(
                "the broker restarted and lost the task (it was queued, or its worker lost "
                "it when the broker went away)"))


def unfinished_messages(link) -> dict:
    """``{message id: its task ids}`` of the messages sent and not finished."""
    unsent = {i.task_id for i in
              list(link._outbox) + list(link._listener_out) + list(link._held)}
    for ids in list(link._pushing.values()):
        unsent |= ids
    messages, batched = {}, set()
    for message_id, members in list(link._batches.items()):
        messages[message_id] = members
        batched.update(members)
    for task_id in list(link._pending):
        if task_id not in batched:
            messages[task_id] = [task_id]
    return {m: ids for m, ids in messages.items() if not unsent.intersection(ids)}
