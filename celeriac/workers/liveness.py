"""Worker heartbeats that say which tasks the worker holds.

Every second a worker writes ``celeriac:alive:<name>`` (expiring after a few seconds) holding
the ids of the tasks it has reserved or is running. When a worker is killed, its key expires;
the orchestrator then finds the tasks it held in kombu's unacked table, no longer claimed by
any live worker, and relaunches them (celeriac.orchestrator.recovery).
"""

from __future__ import annotations

import json
import logging
import threading

logger = logging.getLogger(__name__)

WORKERS_KEY = "celeriac:workers"
ALIVE_PREFIX = "celeriac:alive:"
INTERVAL = 1.0
TTL = 5.0


class Heartbeat:
    """A daemon thread writing this worker's heartbeat until :meth:`stop`."""

    def __init__(self, client, name: str):
        self.client = client
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celeriac-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self.client.sadd(WORKERS_KEY, self.name)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.set(ALIVE_PREFIX + self.name, json.dumps(held_task_ids()),
                                px=int(TTL * 1000))
            except Exception as e:  # keep beating through a broker restart
                logger.warning("heartbeat failed: %s", e)
            self._stop.wait(INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        try:
            self.client.delete(ALIVE_PREFIX + self.name)
            self.client.srem(WORKERS_KEY, self.name)
        except Exception:
            pass


def held_task_ids() -> list:
    """Ids of the tasks this worker process has reserved or is running."""
    from celery.worker import state as worker_state
    for _ in range(5):
        try:
            return list({r.id for r in list(worker_state.reserved_requests)} |
                        {r.id for r in list(worker_state.active_requests)})
        except RuntimeError:  # a set changed size while being copied: try again
            continue
    return []
