"""Finding tasks whose worker died, from heartbeats and kombu's unacked table.

kombu's Redis transport keeps every delivered, unacknowledged message in the ``unacked`` hash
(by delivery tag) with its delivery time in ``unacked_index``. A task there for longer than
``GRACE`` seconds that no live worker's held or running list claims was held by a dead
worker. Tasks are only lost when a worker dies, so nothing is taken back unless a worker was
seen dying in the last ``AFTER_DEATH`` seconds. Removing an entry with HDEL is atomic, so
exactly one sweeper (and never kombu's own restore) takes it back.
"""

from __future__ import annotations

import json
import logging
import time

from celeriac.workers.liveness import ALIVE_PREFIX, HELD_PREFIX, RUNNING_PREFIX, WORKERS_KEY

logger = logging.getLogger(__name__)

UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
GRACE = 8.0  # > heartbeat TTL: a task a worker has just reserved is in its next held list
AFTER_DEATH = 60.0


class Sweeper:
    """Remembers which worker held which task, to say so when that worker disappears."""

    def __init__(self, client):
        self.client = client
        self.holders: dict[str, str] = {}
        self.last_death = float("-inf")

    def sweep(self, pending: set, now: float | None = None) -> list[tuple[str, str]]:
        """Take back pending tasks held by dead workers.

        Returns:
            ``[(task_id, explanation), ...]`` for each task taken back.
        """
        now = time.time() if now is None else now
        names = sorted(n.decode() for n in self.client.smembers(WORKERS_KEY))
        beats = self.client.mget([ALIVE_PREFIX + n for n in names]) if names else []
        alive = [n for n, beat in zip(names, beats) if beat is not None]
        dead = set(names) - set(alive)
        claimed = set()
        keys = [prefix + n for n in alive for prefix in (HELD_PREFIX, RUNNING_PREFIX)]
        lists = self.client.mget(keys) if keys else []
        for name, ids in zip([n for n in alive for _ in (0, 1)], lists):
            for task_id in json.loads(ids) if ids else ():
                claimed.add(task_id)
                if task_id in pending:
                    self.holders[task_id] = name
        if dead:  # reported once: they leave the registry here
            self.last_death = now
            self.client.srem(WORKERS_KEY, *dead)
            self.client.delete(*[p + n for n in dead for p in (HELD_PREFIX, RUNNING_PREFIX)])
            for name in sorted(dead):
                logger.warning("worker %s stopped sending heartbeats", name)
        lost = []
        if now - self.last_death > AFTER_DEATH:
            return lost
        delivered = dict(self.client.zrange(UNACKED_INDEX, 0, now - GRACE, byscore=True,
                                            withscores=True))
        if not delivered:
            return lost
        tags = list(delivered)
        entries = self.client.hmget(UNACKED, tags)
        for tag, entry in zip(tags, entries):
            if entry is None:
                continue
            try:
                task_id = json.loads(entry)[0]["headers"]["id"]
            except (ValueError, KeyError, IndexError, TypeError):
                continue
            if task_id not in pending or task_id in claimed:
                continue
            if self.client.hdel(UNACKED, tag):  # atomic: only one taker
                self.client.zrem(UNACKED_INDEX, tag)
                holder = self.holders.pop(task_id, None)
                lost.append((task_id, f"its worker {holder or '(unknown)'} died while holding "
                             "it (killed, out of memory, or its node was lost)"))
        for task_id in set(self.holders) - pending:
            self.holders.pop(task_id, None)
        return lost
