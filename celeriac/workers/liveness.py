"""Which workers are alive, and which tasks each holds.

Three keys per worker, written by two processes so that a task holding the GIL (a long C
loop) cannot make a live worker look dead:

- ``celeriac:alive:<name>``, expiring after ``TTL`` seconds, is refreshed every second by the
  supervising ``celeriac worker`` process while the worker process exists.
- ``celeriac:held:<name>`` lists the ids of the tasks the worker has reserved or is running,
  rewritten every second by a thread of the worker (it may lag while a task holds the GIL).
- ``celeriac:running:<name>`` lists the tasks the worker is running, written by the supervisor
  from lines the worker writes to a pipe as each task starts and ends (a few microseconds,
  no round trip), so a task is listed even if it then holds the GIL.

When a worker dies its alive key expires; the orchestrator then takes back the tasks no live
worker holds from kombu's unacked table and relaunches them (celeriac.orchestrator.recovery).
"""

from __future__ import annotations

import json
import logging
import os
import threading

logger = logging.getLogger(__name__)

WORKERS_KEY = "celeriac:workers"
ALIVE_PREFIX = "celeriac:alive:"
HELD_PREFIX = "celeriac:held:"
RUNNING_PREFIX = "celeriac:running:"
RUNNING_FD_ENV = "CELERIAC_RUNNING_FD"
INTERVAL = 1.0
TTL = 5.0
HELD_TTL = 24 * 3600.0  # only so a vanished worker's list does not stay forever


class HeldTasks:
    """In a worker process: keeps ``celeriac:held:<name>`` up to date."""

    def __init__(self, client, name: str):
        self.client = client
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celeriac-held", daemon=True)

    def start(self) -> "HeldTasks":
        self._thread.start()
        return self

    def write(self) -> None:
        self.client.set(HELD_PREFIX + self.name, json.dumps(held_task_ids()),
                        px=int(HELD_TTL * 1000))

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                self.write()
            except Exception as e:  # keep going through a broker restart
                logger.warning("writing held tasks failed: %s", e)

    def stop(self) -> None:
        self._stop.set()
        try:
            self.client.delete(HELD_PREFIX + self.name)
        except Exception:
            pass


class AliveBeat:
    """In the supervising process: says which of its worker processes are alive, and which
    tasks each is running (from the lines it writes to its pipe)."""

    def __init__(self, client):
        self.client = client
        self.running: dict[str, set] = {}
        self._partial: dict[str, bytes] = {}
        self._changed: set[str] = set()

    def read(self, name: str, fd: int) -> None:
        """Take in what worker ``name`` wrote to its pipe since the last call."""
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        data = self._partial.pop(name, b"") + data
        data, _, rest = data.rpartition(b"\n")  # a line cut by the read waits for its end
        if rest:
            self._partial[name] = rest
        running = self.running.setdefault(name, set())
        for line in data.decode(errors="replace").splitlines():
            if line[:1] == "+":
                running.add(line[1:])
            elif line[:1] == "-":
                running.discard(line[1:])
        self._changed.add(name)

    def beat(self, names) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.sadd(WORKERS_KEY, name)
                pipe.set(ALIVE_PREFIX + name, "1", px=int(TTL * 1000))
            for name in self._changed:
                pipe.set(RUNNING_PREFIX + name, json.dumps(sorted(self.running[name])),
                         px=int(HELD_TTL * 1000))
            pipe.execute()
            self._changed.clear()
        except Exception as e:  # keep going through a broker restart
            logger.warning("heartbeat failed: %s", e)

    def forget(self, names) -> None:
        """Workers that stopped cleanly: drop their keys now rather than let them expire."""
        try:
            for name in names:
                self.client.delete(ALIVE_PREFIX + name, RUNNING_PREFIX + name)
                self.client.srem(WORKERS_KEY, name)
        except Exception:
            pass


class RunningNotes:
    """In a worker process: the write end of the pipe to the supervisor (none elsewhere)."""

    def __init__(self, fd: int | None = None):
        self.fd = fd
        if fd is not None:
            os.set_blocking(fd, False)

    @classmethod
    def from_environment(cls) -> "RunningNotes":
        """Take the pipe the supervisor passed, removing it from the environment so that
        processes the worker starts (bash apps) do not inherit a stale fd number."""
        fd = os.environ.pop(RUNNING_FD_ENV, None)
        return cls(int(fd) if fd else None)

    def note(self, sign: bytes, task_id: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, sign + task_id.encode() + b"\n")
        except (BlockingIOError, OSError):
            pass  # a full pipe: the held list still names the task within a second


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
