"""Which workers are alive, and which tasks each holds.

Three keys per worker, written by two processes so that a task holding the GIL (a long C
loop) cannot make a live worker look dead:

- ``celeriac:alive:<name>``, expiring after ``TTL`` seconds, is refreshed every second by the
  supervising ``celeriac worker`` process while the worker process exists. Its value says
  which queue the worker serves, which block started it, its task slots, and whether it has
  connected to the broker (so the orchestrator can count capacity and spot blocks whose
  workers never connect).
- ``celeriac:held:<name>`` lists the ids of the tasks the worker has reserved or is running,
  rewritten every second by a thread of the worker (it may lag while a task holds the GIL).
- ``celeriac:running:<name>`` lists the tasks the worker is running, written by the supervisor
  from lines the worker writes to a pipe as each task starts and ends (a few microseconds,
  no round trip), so a task is listed even if it then holds the GIL. Rewritten every beat, so
  a broker that restarted without its data learns it again within a second.

A worker can be alive but not running its task: stopped (SIGSTOP, a debugger, ``kill -STOP``
of its process group) while its supervisor still beats. The supervisor reads the state of
the worker process, and of each process that noted a task, in ``/proc``; once one has been
stopped (state ``T`` or ``t``) the alive key says for how long (``stopped_for``) and which
tasks it holds up (``stopped_tasks``; null: the whole worker is stopped, so all of them). A
task that is merely busy, even holding the GIL, is running (state ``R``/``S``/``D``), never
stopped.

The orchestrator, in turn, refreshes ``celeriac:orchestrator:<run id>`` (``ORCHESTRATOR_TTL``):
a worker that no longer sees it, and runs no task, is an orphan and exits after its idle
timeout rather than hold an allocation for a run that is gone.

When a worker dies its alive key expires; the orchestrator then takes back the tasks no live
worker holds from kombu's unacked table and relaunches them, and the tasks of a worker
stopped for too long run elsewhere (celeriac.wire.redis_recovery).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from celeriac.wire.keys import ALIVE_PREFIX, ALIVE_TTL, HELD_PREFIX, RUNNING_PREFIX, WORKERS_KEY

logger = logging.getLogger(__name__)

RUNNING_FD_ENV = "CELERIAC_RUNNING_FD"
INTERVAL = 1.0
TTL = ALIVE_TTL
READY_NOTE = b"*"
HELD_TTL = 24 * 3600.0  # only so a vanished worker's list does not stay forever


class HeldTasks:
    """In a worker process: keeps ``celeriac:held:<name>`` up to date."""

    def __init__(self, client, name: str, also=None):
        self.client = client
        self.name = name
        self.also = also  # ``also(client)`` runs each beat too (see workers.transport)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celeriac-held", daemon=True)

    def start(self) -> "HeldTasks":
        self._thread.start()
        return self

    def write(self) -> None:
        self.client.set(HELD_PREFIX + self.name, json.dumps(held_task_ids()),
                        px=int(HELD_TTL * 1000))
        if self.also is not None:
            self.also(self.client)

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

    def __init__(self, client, info: dict | None = None):
        self.client = client
        self.info = dict(info or {})     # queue, block, slots: the same for all its workers
        self.ready: set[str] = set()     # workers that have connected to the broker
        self.running: dict[str, set] = {}
        self.requests: list[str] = []    # pool requests its workers relayed (workers.pool)
        self.pids: dict[str, dict] = {}  # worker -> {task id: pid of the process running it}
        self._partial: dict[str, bytes] = {}
        self._stopped_since: dict[str, float] = {}  # worker -> monotonic time first seen stopped

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
        pids = self.pids.setdefault(name, {})
        for line in data.decode(errors="replace").splitlines():
            task_id, _, pid = line[1:].partition(" ")
            if line[:1] == "+":
                running.add(task_id)
                if pid.isdigit():
                    pids[task_id] = int(pid)
            elif line[:1] == "-":
                running.discard(task_id)
                pids.pop(task_id, None)
            elif line == READY_NOTE.decode():
                self.ready.add(name)
            elif line[:1] == "!":
                self.requests.append(line[1:])

    def stopped(self, name: str, pid: int, now: float | None = None):
        """``(seconds, task ids or None)`` if worker ``name`` (process ``pid``) or a process
        running one of its tasks is stopped, else None. None for the tasks: the worker
        process itself is stopped, so every task it holds waits."""
        now = time.monotonic() if now is None else now
        if process_stopped(pid):
            tasks = None
        else:
            tasks = sorted(t for t, p in self.pids.get(name, {}).items()
                           if t in self.running.get(name, ()) and process_stopped(p))
        if tasks == []:
            self._stopped_since.pop(name, None)
            return None
        since = self._stopped_since.setdefault(name, now)
        return now - since, tasks

    def beat(self, workers) -> None:
        """Refresh the alive and running keys of ``workers`` ({name: pid}, or names)."""
        if not isinstance(workers, dict):
            workers = dict.fromkeys(workers)
        try:
            pipe = self.client.pipeline(transaction=False)
            for name, pid in workers.items():
                pipe.sadd(WORKERS_KEY, name)
                info = dict(self.info, ready=name in self.ready)
                stopped = self.stopped(name, pid) if pid else None
                if stopped is not None:
                    info.update(stopped_for=round(stopped[0], 1), stopped_tasks=stopped[1])
                pipe.set(ALIVE_PREFIX + name, json.dumps(info), px=int(TTL * 1000))
                pipe.set(RUNNING_PREFIX + name, json.dumps(sorted(self.running.get(name, ()))),
                         px=int(HELD_TTL * 1000))
            pipe.execute()
        except Exception as e:  # keep going through a broker restart
            logger.warning("heartbeat failed: %s", e)

    def busy(self, names) -> bool:
        """Whether any of these workers is running a task."""
        return any(self.running.get(name) for name in names)

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

    def note(self, sign: bytes, task_id: str = "") -> None:
        """Tell the supervisor a task started (``+``) or ended (``-``), or that this worker
        is connected and consuming (``READY_NOTE``)."""
        if self.fd is None:
            return
        pid = b" %d" % os.getpid() if task_id else b""  # the process to watch while it runs
        try:
            os.write(self.fd, sign + task_id.encode() + pid + b"\n")
        except (BlockingIOError, OSError):
            pass  # a full pipe: the held list still names the task within a second

    def ask(self, request: str) -> None:
        """Relay a pool request to the supervisor (see celeriac.workers.pool)."""
        if self.fd is not None:
            os.write(self.fd, b"!" + request.encode() + b"\n")


#: Messages this worker process took straight off its queue and has not handed in
#: (celeriac.workers.follow_on): Celery's requests do not name them.
held_here: set = set()


def held_task_ids() -> list:
    """Ids of the tasks this worker process has reserved or is running."""
    from celery.worker import state as worker_state
    for _ in range(5):
        try:
            return list({r.id for r in list(worker_state.reserved_requests)} |
                        {r.id for r in list(worker_state.active_requests)} | set(held_here))
        except RuntimeError:  # a set changed size while being copied: try again
            continue
    return []


def process_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP/SIGTSTP, or stopped by a debugger)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:  # gone, or no /proc: not known to be stopped
        return False
    return stat[stat.rfind(b")") + 2:][:1] in (b"T", b"t")
