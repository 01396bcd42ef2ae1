"""The link's watcher thread: the run's heartbeat, broker restarts, and workers found dead.

Every ``SWEEP_INTERVAL`` seconds it refreshes the run's heartbeat (workers whose run stops
beating leave when idle), notices a broker restart (:class:`BrokerRestart` relaunches only
the tasks the broker lost), and asks the transport's sweeper which unfinished tasks are held
by workers that stopped heartbeating or are stopped: those fail with WorkerLost, which the
DFK relaunches as a new try.
"""

from __future__ import annotations

import logging
import time

from celeriac.orchestrator.broker_restart import BrokerRestart
from celeriac.wire.keys import ALIVE_TTL

logger = logging.getLogger(__name__)

SWEEP_INTERVAL = 2.0


def watch(link) -> None:
    """Watch for ``link`` (a ``CeleryLink``) until it stops."""
    sweeper = link.transport.sweeper(lambda message_id: _describe(link, message_id))
    server = link.transport.instance()  # it changes when the broker restarts (may forget)
    restart = BrokerRestart(link)
    # After the broker was away, workers' alive keys may have expired meanwhile: no one
    # is judged dead until they have had a whole TTL of the broker back to beat again.
    judge_after = 0.0
    while not link._stop.wait(SWEEP_INTERVAL):
        link._beat()
        try:
            now = link.transport.instance()
            if now is None:
                judge_after = time.monotonic() + ALIVE_TTL + SWEEP_INTERVAL
            if server is not None and now is not None and now != server:
                judge_after = time.monotonic() + ALIVE_TTL + SWEEP_INTERVAL
                restart.noticed()
            server = now or server
            restart.recheck()
            if not link._pending or time.monotonic() < judge_after:
                continue
            lost = sweeper.sweep(set(link._pending) | set(link._batches) | link._revoked)
        except link.transport.errors as e:
            judge_after = time.monotonic() + ALIVE_TTL + SWEEP_INTERVAL
            logger.warning("lost-worker sweep skipped: %s", e)
            continue
        except Exception:  # a bug here must not end the run's recovery: try again next time
            logger.exception("lost-worker sweep failed; trying again in %.0f s", SWEEP_INTERVAL)
            continue
        for task_id, why in lost:
            if task_id in link._revoked:  # taken back from a worker killed to stop it
                link._revoked.discard(task_id)
                continue
            logger.warning("task %s: %s", task_id, why)
            link._complete(task_id, exception=link._lost(task_id, why))


def _describe(link, message_id: str) -> str:
    """The app of a message, for the log."""
    members = link._batches.get(message_id)
    entry = link._pending.get(members[0] if members else message_id)
    if entry is None:
        return ""
    return f"{len(members)} calls of {entry[2]}" if members else entry[2]
