"""What a worker does with a task its run revoked: one it has not started is skipped
(:func:`revoke_follower` puts the run's signed revokes into Celery's revoked set), and the
process running one is killed, with all it started (:class:`Terminator`, :func:`kill_tree`).
Only revokes signed with the run's key count: anyone on the broker can write there."""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger(__name__)


def revoke_follower(key: bytes, run_id: str):
    """In a worker process: ``follow(client)`` puts the run's signed revokes into Celery's
    revoked set, so a revoked message this worker has not started is acknowledged without
    running (the supervisor stops one that runs: :class:`Terminator`)."""
    from celery.worker import state as worker_state

    from celeriac.wire import revokes

    def follow(client, quiet: bool = False) -> None:
        try:
            ids = revokes.fetch(client, key, run_id)
        except Exception:
            if quiet:
                return
            raise
        for task_id in ids:
            worker_state.revoked.add(task_id)
    return follow


class Terminator:
    """In the supervisor: kills the process running a task its run has revoked (a signed
    revoke, see :mod:`celeriac.wire.revokes`), with the processes it started.

    With the solo pool that process is the worker itself, which is then restarted like any
    worker that died; with prefork it is the pool process. Looks on the broker only while
    a task runs.
    """

    def __init__(self, client, key: bytes | None, run_id: str):
        self.client, self.key, self.run_id = client, key, run_id
        self.stopped: set[str] = set()
        self.killed: set[str] = set()    # workers whose own process it killed

    def check(self, beat, alive: dict) -> None:
        """Stop revoked tasks among those ``alive`` workers ({name: pid}) are running."""
        from celeriac.wire import revokes
        running = {task_id: name for name in alive for task_id in beat.running.get(name, ())}
        if self.key is None or not running:
            return
        try:
            revoked = revokes.fetch(self.client, self.key, self.run_id)
        except Exception:  # the broker is away: try again next beat
            return
        for task_id in sorted(running.keys() & revoked - self.stopped):
            name = running[task_id]
            pid = beat.pids.get(name, {}).get(task_id) or alive[name]
            killed = kill_tree(pid)
            self.stopped.add(task_id)
            if pid == alive[name]:
                self.killed.add(name)
            logger.warning("task %s was revoked by run %s while worker %s ran it: killed "
                           "process %d%s", task_id, self.run_id, name, pid,
                           f" and {killed - 1} it started" if killed > 1 else "")


def kill_tree(pid: int) -> int:
    """SIGKILL process ``pid`` and its descendants; returns how many were signalled."""
    children: dict[int, list] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read()
                children.setdefault(int(stat[stat.rfind(b")") + 2:].split()[1]),
                                    []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:  # freeze the tree first, parents first: none forks or sees a child die
        try:
            os.kill(p, signal.SIGSTOP)
        except (ProcessLookupError, PermissionError):
            pass
    killed = 0
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, PermissionError):
            pass
    return killed
