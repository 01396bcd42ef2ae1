"""The workers a broker says are alive: one record each, read from their heartbeat keys."""

from __future__ import annotations

import json
from dataclasses import dataclass

from celeriac.wire.keys import ALIVE_PREFIX, WORKERS_KEY


@dataclass(frozen=True)
class LiveWorker:
    """One worker process with a fresh heartbeat, as the broker describes it."""

    name: str
    queue: str | None
    block: str | None
    slots: int
    ready: bool
    stopped_for: float | None = None       # seconds it (or a process running a task) is stopped
    stopped_tasks: tuple | None = None     # the tasks held up; None: all it holds
    supervisor: str | None = None          # the `celeriac worker` process that started it
    max_slots: int | None = None           # slots its supervisor may grow to (autoscale)


def live_workers(client) -> list[LiveWorker]:
    """Every worker whose alive key has not expired (on any queue)."""
    names = sorted(n.decode() for n in client.smembers(WORKERS_KEY))
    values = client.mget([ALIVE_PREFIX + n for n in names]) if names else []
    return from_values(zip(names, values))


def from_values(pairs) -> list[LiveWorker]:
    """The live workers of ``(name, alive value)`` pairs (JSON text or a dict; None:
    expired)."""
    found = []
    for name, value in pairs:
        if value is None:
            continue
        try:
            info = value if isinstance(value, dict) else json.loads(value)
        except ValueError:
            info = None
        if not isinstance(info, dict):  # a worker of an older celeriac: capacity unknown
            info = {}
        stopped_for = info.get("stopped_for")
        stopped_tasks = info.get("stopped_tasks")
        found.append(LiveWorker(
            name, info.get("queue"), info.get("block"), int(info.get("slots") or 1),
            bool(info.get("ready")),
            float(stopped_for) if isinstance(stopped_for, (int, float)) else None,
            tuple(stopped_tasks) if isinstance(stopped_tasks, list) else None,
            info.get("supervisor"), _count(info.get("max_slots"))))
    return found


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
