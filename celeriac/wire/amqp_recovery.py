"""Finding the tasks a stopped worker holds up on RabbitMQ, to run them as a new try.

A dead worker needs nothing here: its connection closes and RabbitMQ gives its unacknowledged
messages back (late acks), and the worker that gets one reports it lost (``workers.app``). A
worker stopped by SIGSTOP (a debugger, a suspended job) keeps its connection open, so RabbitMQ
never gives its messages back. Its supervisor still beats and says on the board how long the
worker has been stopped and which tasks it holds up (``stopped_for``, ``stopped_tasks``;
:mod:`celeriac.workers.liveness`). As on Redis (:mod:`celeriac.wire.redis_recovery`), the
user is warned after ``STOPPED_WARN`` seconds, naming the worker and the task; after
``STOPPED_RELAUNCH`` seconds the task fails with WorkerLost, so the run relaunches it as a
new try (counted against ``worker_lost_retries``) under a new message id. A message held by
a connection cannot be taken from it, so if the stopped worker resumes it finishes its copy,
and its outcome, for a try that is over, is ignored: the future completes once.
"""

from __future__ import annotations

import logging

from celeriac.wire.alive import live_workers
from celeriac.wire.redis_recovery import STOPPED_RELAUNCH, STOPPED_WARN, Sweeper

logger = logging.getLogger(__name__)

__all__ = ["AmqpSweeper", "STOPPED_RELAUNCH", "STOPPED_WARN"]


class AmqpSweeper(Sweeper):
    """One run's look at the workers on the board: returns the run's tasks held up by
    workers stopped for ``STOPPED_RELAUNCH`` seconds (the Redis sweeper's warnings and
    claims, without kombu's unacked table, which RabbitMQ does not have).

    Args:
        client: the run's records on the board (:class:`~celeriac.wire.amqp_records.Records`).
        describe: ``describe(task_id)`` names a task for the log (its app).
    """

    def sweep(self, pending, now: float | None = None) -> list[tuple[str, str]]:
        """``[(task_id, explanation), ...]`` for each of ``pending`` held up by a worker
        stopped too long, once each, to fail with WorkerLost."""
        alive = {w.name: w for w in live_workers(self.client)}
        stopped_names = [n for n, w in alive.items() if (w.stopped_for or 0) >= STOPPED_WARN]
        claims = self._claims(stopped_names, pending) if stopped_names else {}
        stopped = self._stopped({n: alive[n] for n in stopped_names}, claims, pending)
        lost = []
        for task_id, name in stopped.items():
            seconds = alive[name].stopped_for
            if seconds < STOPPED_RELAUNCH:
                continue
            self.requeued.add(task_id)
            why = (f"its worker {name} has been stopped for {seconds:.0f}s; the task runs "
                   f"again as a new try, and if {name} resumes its outcome is ignored")
            lost.append((task_id, why))
        self.requeued &= set(pending)
        self.warned = {(w, t) for w, t in self.warned if t in pending}
        for task_id in set(self.holders) - set(pending):
            self.holders.pop(task_id, None)
        return lost
