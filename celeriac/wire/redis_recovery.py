"""Finding the tasks a dead or stopped worker, or a restarted broker, holds up or lost.

kombu's Redis transport keeps every delivered, unacknowledged message in the ``unacked`` hash
(by delivery tag) with its delivery time in ``unacked_index``. Workers say which tasks they
hold (celeriac.workers.liveness).

- **Dead workers.** A worker whose heartbeat stopped is moved, by whichever run's sweeper
  sees it first, from the worker registry to ``celeriac:deaths`` (a sorted set: name -> when),
  and its held and running lists are left to expire after ``2 * AFTER_DEATH`` rather than
  deleted, so every run sharing the broker sees the death and who held what, however many
  runs there are and whichever noticed. Each run then takes back its own tasks that sit in
  the unacked table for longer than ``GRACE`` seconds and that no live worker claims. Tasks
  are only lost when a worker dies, so nothing is taken back unless a death was recorded in
  the last ``AFTER_DEATH`` seconds. Taking an entry back is an HDEL, which is atomic: one
  taker, never kombu's own restore as well.
- **Stopped workers.** A worker whose supervisor says it is stopped (SIGSTOP, a debugger)
  gets a warning naming it and the task after ``STOPPED_WARN`` seconds; after
  ``STOPPED_RELAUNCH`` seconds the same message is taken back from the unacked table and put
  at the head of its queue, so another worker runs it. If the stopped worker resumes, it
  finishes the task too and the first outcome counts (the same message id, so the second is
  ignored); the task has then run twice, as after any relaunch.
- **A restarted broker** (:func:`whereabouts`): which messages it still has, in a queue or
  claimed by a live worker, so that only the others are relaunched.
"""

from __future__ import annotations

import json
import logging
import time

from celeriac.wire.alive import live_workers
from celeriac.wire.keys import HELD_PREFIX, RUNNING_PREFIX, WORKERS_KEY

logger = logging.getLogger(__name__)

UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
DEATHS_KEY = "celeriac:deaths"
GRACE = 8.0  # > heartbeat TTL: a task a worker has just reserved is in its next held list
AFTER_DEATH = 60.0
STOPPED_WARN = 10.0       # a worker stopped this long gets a warning naming it and its tasks
STOPPED_RELAUNCH = 30.0   # ... and after this long its tasks run on another worker


class Sweeper:
    """One run's look at the workers of its broker: takes back the run's tasks held by dead
    workers, and runs elsewhere those held up by stopped ones.

    Args:
        client: a Redis client of the broker.
        describe: ``describe(task_id)`` names a task for the log (its app).
    """

    def __init__(self, client, describe=None):
        self.client = client
        self.describe = describe or (lambda task_id: "")
        self.holders: dict[str, str] = {}
        self.reported: set[str] = set()        # deaths this run has logged
        self.warned: set[tuple] = set()        # (worker, task) warned of as stopped
        self.requeued: set[str] = set()        # tasks run elsewhere: their worker is stopped

    def sweep(self, pending, now: float | None = None) -> list[tuple[str, str]]:
        """Take back ``pending`` tasks (this run's message ids) that a worker lost.

        Returns:
            ``[(task_id, explanation), ...]`` for each task taken back, to fail with
            WorkerLost (so the DFK relaunches it). Tasks of stopped workers that are put back
            in their queue are not returned: their futures stay pending.
        """
        now = time.time() if now is None else now
        names = [n.decode() for n in self.client.smembers(WORKERS_KEY)]
        alive = {w.name: w for w in live_workers(self.client)}
        dead = [n for n in names if n not in alive]
        if dead:
            self._record_deaths(dead, now)
        deaths = {n.decode(): t for n, t in self.client.zrange(
            DEATHS_KEY, now - AFTER_DEATH, "+inf", byscore=True, withscores=True)}
        claims = self._claims(list(alive) + list(deaths), pending)
        for name in sorted(set(deaths) - self.reported):
            held_ours = any(t in pending for t in claims.get(name, ()))
            logger.log(logging.WARNING if held_ours else logging.INFO,
                       "worker %s stopped sending heartbeats", name)
        self.reported = set(deaths)
        stopped = self._stopped(alive, claims, pending)
        relaunch = {t: w for t, w in stopped.items() if alive[w].stopped_for >= STOPPED_RELAUNCH}
        claimed = set()  # a claim by a worker stopped too long holds nothing back
        for name, worker in alive.items():
            mine = claims.get(name, set())
            if (worker.stopped_for or 0) >= STOPPED_RELAUNCH:
                mine = mine - set(relaunch) - self.requeued
            claimed |= mine
        lost = []
        if relaunch:
            lost += self._run_elsewhere(relaunch, alive)
        if deaths:
            lost += self._take_back_from_dead(pending, claimed, now)
        for task_id in set(self.holders) - set(pending):
            self.holders.pop(task_id, None)
        self.requeued &= set(pending)
        self.warned = {(w, t) for w, t in self.warned if t in pending}
        return lost

    def _record_deaths(self, dead, now: float) -> None:
        # One transaction: a run that sees the worker gone from the registry sees its death.
        pipe = self.client.pipeline(transaction=True)
        pipe.srem(WORKERS_KEY, *dead)
        pipe.zadd(DEATHS_KEY, dict.fromkeys(dead, now))
        for name in dead:  # kept readable for every run, not deleted
            pipe.expire(HELD_PREFIX + name, int(2 * AFTER_DEATH))
            pipe.expire(RUNNING_PREFIX + name, int(2 * AFTER_DEATH))
        pipe.zremrangebyscore(DEATHS_KEY, "-inf", now - 2 * AFTER_DEATH)
        pipe.execute()

    def _claims(self, names, pending) -> dict[str, set]:
        """``{worker: ids it holds or runs}``; remembers which worker holds our tasks."""
        keys = [prefix + n for n in names for prefix in (HELD_PREFIX, RUNNING_PREFIX)]
        lists = self.client.mget(keys) if keys else []
        claims: dict[str, set] = {}
        for k, ids in enumerate(lists):
            name = names[k // 2]
            for task_id in _ids(ids):
                claims.setdefault(name, set()).add(task_id)
                if task_id in pending:
                    self.holders[task_id] = name
        return claims

    def _stopped(self, alive, claims, pending) -> dict[str, str]:
        """``{task id: worker}`` for our tasks held up by a stopped worker; warns once each."""
        found = {}
        for name, worker in alive.items():
            if worker.stopped_for is None or worker.stopped_for < STOPPED_WARN:
                continue
            tasks = (claims.get(name, set()) if worker.stopped_tasks is None
                     else set(worker.stopped_tasks))
            for task_id in sorted(t for t in tasks if t in pending and t not in self.requeued):
                found[task_id] = name
                if (name, task_id) not in self.warned:
                    self.warned.add((name, task_id))
                    logger.warning(
                        "worker %s has been stopped for %.0fs (SIGSTOP, a debugger, or a "
                        "suspended job) while holding task %s%s; if it is still stopped after "
                        "%.0fs the task runs on another worker", name, worker.stopped_for,
                        task_id, _named(self.describe(task_id)), STOPPED_RELAUNCH)
        return found

    def _run_elsewhere(self, relaunch: dict, alive) -> list[tuple[str, str]]:
        """Put the messages of tasks held up by stopped workers back at the head of their
        queues (taken from the unacked table first: one taker). A task with no unacked entry
        is returned, to relaunch as a new try."""
        entries = _unacked_by_id(self.client, set(relaunch))
        lost = []
        for task_id, name in relaunch.items():
            seconds = alive[name].stopped_for
            self.requeued.add(task_id)
            why = (f"its worker {name} has been stopped for {seconds:.0f}s; if {name} "
                   "resumes it finishes the task too, and the first outcome counts")
            if task_id not in entries:
                lost.append((task_id, why))
                continue
            tag, entry = entries[task_id]
            if self.client.hdel(UNACKED, tag):
                self.client.zrem(UNACKED_INDEX, tag)
                _requeue(self.client, entry)
                logger.warning("task %s%s runs again on another worker: %s", task_id,
                               _named(self.describe(task_id)), why)
        return lost

    def _take_back_from_dead(self, pending, claimed, now: float) -> list[tuple[str, str]]:
        delivered = dict(self.client.zrange(UNACKED_INDEX, 0, now - GRACE, byscore=True,
                                            withscores=True))
        if not delivered:
            return []
        tags = list(delivered)
        lost = []
        for tag, entry in zip(tags, self.client.hmget(UNACKED, tags)):
            task_id = _message_id(entry)
            if task_id is None or task_id not in pending or task_id in claimed:
                continue
            if self.client.hdel(UNACKED, tag):  # atomic: only one taker
                self.client.zrem(UNACKED_INDEX, tag)
                holder = self.holders.pop(task_id, None)
                lost.append((task_id, f"its worker {holder or '(unknown)'} died while holding "
                             "it (killed, out of memory, or its node was lost)"))
        return lost


def whereabouts(client, queues) -> tuple[set, dict]:
    """What a broker holds of a run's messages, e.g. after it restarted.

    Returns:
        ``(found, unacked)``: the message ids in ``queues`` or claimed by a live worker, and
        ``{message id: delivery tag}`` of the unacked table (delivered to a worker that may
        be gone, or that lost the message in the restart).
    """
    queues = sorted(queues)
    pipe = client.pipeline(transaction=True)  # one instant for the queues and the table
    for queue in queues:
        pipe.lrange(queue, 0, -1)
    pipe.hgetall(UNACKED)
    *lists, table = pipe.execute()
    found = {_message_id(m) for messages in lists for m in messages}
    names = [w.name for w in live_workers(client)]
    keys = [prefix + n for n in names for prefix in (HELD_PREFIX, RUNNING_PREFIX)]
    for ids in client.mget(keys) if keys else []:
        found.update(_ids(ids))
    unacked = {}
    for tag, entry in table.items():
        message_id = _message_id(entry)
        if message_id is not None:
            unacked[message_id] = tag
    found.discard(None)
    return found, unacked


def take_back(client, tag) -> bool:
    """Remove an unacked entry, if it is still there (atomic: True for one caller only)."""
    if client.hdel(UNACKED, tag):
        client.zrem(UNACKED_INDEX, tag)
        return True
    return False


def _requeue(client, entry) -> None:
    """Put an unacked entry's message at the head of its queue, under a new delivery tag (so
    the stopped worker's late ack does not remove the new holder's unacked entry)."""
    message, _exchange, routing_key = json.loads(entry)
    properties = message.setdefault("properties", {})
    properties["delivery_tag"] = f"{properties.get('delivery_tag', '')}~{time.time():.6f}"
    message.setdefault("headers", {})["redelivered"] = True
    client.rpush(routing_key, json.dumps(message))  # consumers pop from the right


def _unacked_by_id(client, ids: set) -> dict:
    """``{message id: (tag, entry)}`` for the unacked entries of ``ids``."""
    found = {}
    for tag, entry in client.hgetall(UNACKED).items():
        message_id = _message_id(entry)
        if message_id in ids:
            found[message_id] = (tag, entry)
    return found


def _message_id(entry):
    """The Celery id of a queued message or an unacked entry (``[message, exchange, key]``)."""
    try:
        data = json.loads(entry)
        if isinstance(data, list):
            data = data[0]
        return data["headers"]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _ids(value) -> list:
    try:
        ids = json.loads(value) if value else []
    except ValueError:
        return []
    return ids if isinstance(ids, list) else []


def _named(app: str) -> str:
    return f" ({app})" if app else ""
