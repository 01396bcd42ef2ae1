"""The run database: every task, state change, try and block of a run, in SQLite, written off
the hot path.

The kernel tells a :class:`RunDatabase` of each submission and state change (it is one of the
kernel's observers); the database turns each into a small tuple appended to a deque, which is
all the DFK's threads pay (about 1.5 us a task). A feeder thread sends the queued tuples every
half second, marshalled (cheaper than pickle for plain tuples), in one pipe write to a writer
process (:mod:`.monitoring_writer`), which commits each batch in one transaction. SQLite's work
thus never competes with the DFK for the GIL, and the writer runs at the idle CPU priority
(``SCHED_IDLE``, or nice where that is refused), so on a busy machine it takes only the cycles
the run leaves idle and catches up when the run ends. The writer exits when the pipe closes,
so it never outlives the run, even a killed one. Each flush also carries the kernel's state
counts, so ``celeriac status`` of a live run is exact without reading every task.

The feed is bounded: when more than :data:`MAX_BACKLOG` rows wait for a writer that gets no
CPU, the next submission waits until the feeder has handed them over (the writer is then the
run's pace). A saturated run of a million tasks thus never holds more than about two
backlogs of rows (one queued, one in the pipe write), whatever the writer's share of the CPU.

The file is ``<run dir>/monitoring.sqlite3`` in WAL mode, so ``celeriac status`` and
``celeriac report`` can read it while the run writes. A plain task (one try, no join) is one
row of ``tasks``; its transitions and try are derived by the views ``all_transitions`` and
``all_tries`` (see :mod:`.monitoring_writer`). The indexes on what the readers use (state, app,
task id) are built when the run ends, so a run of a million tasks stays queryable without
slowing the run.

Where each try ran: a worker signs its name (``name@host``) into each outcome frame, and the
link hands it here (:meth:`RunDatabase.ran_on`) before completing the future; the ``workers``
table (host, block, executor, joined, left) comes from the workers' heartbeats on the broker,
read every :data:`HEARTBEAT_SECONDS` and as soon as an unknown worker reports. The view
``all_tries`` joins the two, giving each try its host and block.

``Config(monitoring=...)``: True (the default) or a Parsl ``MonitoringHub(...)`` (whose
options, a hub address and ports for Parsl's own database server, mean nothing here) turn it
on; False or None turn it off.
"""

from __future__ import annotations

import logging
import marshal
import os
import pickle
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from typing import Optional

from celeriac.orchestrator import monitoring_writer
from celeriac.orchestrator.monitoring_writer import SCHEMA
from celeriac.orchestrator.runlog import carry
from celeriac.orchestrator.states import FINAL_STATES, States
from celeriac.private_files import private_file

logger = logging.getLogger(__name__)

__all__ = ["DB_NAME", "RunDatabase", "SCHEMA", "monitoring_enabled", "error_text"]

DB_NAME = "monitoring.sqlite3"
#: send the queued rows this often (seconds); no earlier wake-up, which would cost the hot
#: path a length check and the DFK a thread switch per batch
FLUSH_SECONDS = 0.5
#: longest error text stored per try or task (tracebacks can be long)
ERROR_CHARS = 20_000
#: a live run writes its state counts at least this often (seconds)
HEARTBEAT_SECONDS = 2.0
#: rows queued for the writer beyond which a submission waits for the feeder (a plain task
#: makes 3 rows of about 100 bytes: 200,000 rows are about 20 MB)
MAX_BACKLOG = 200_000

_FINAL = frozenset(s.value for s in FINAL_STATES)



def monitoring_enabled(option) -> bool:
    """Whether ``Config(monitoring=option)`` turns the run database on (see the module doc)."""
    return option is not None and option is not False


def error_text(exc: Optional[BaseException]) -> Optional[str]:
    """The text a user needs of an exception: its traceback (with a worker's, when it has
    one) or at least its type and message; None for None."""
    if exc is None:
        return None
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # a broken __str__ must not stop the run
        text = f"{type(exc).__name__}: (unprintable)"
    return text[-ERROR_CHARS:]


class _Roster:
    """Which of a run's workers are alive, as rows: ``("j", name, host, block, executor,
    time)`` when one appears, ``("x", name, time)`` when its heartbeat has expired."""

    def __init__(self, transport, run_id: str):
        self.transport = transport
        self.prefix = f"celeriac.{run_id}."    # the run's queues (wire.keys.queue_name)
        self.alive: set = set()
        self.due = True                        # read at the next flush, whatever the time

    def changes(self, now: float) -> list:
        try:
            workers = [w for w in self.transport.live_workers()
                       if (w.queue or "").startswith(self.prefix)]
        except Exception as e:  # the broker away: the next read catches up
            logger.debug("could not read the workers' heartbeats: %s", e)
            return []
        self.due = False
        names = {w.name for w in workers}
        rows = [("j", w.name, w.name.rsplit("@", 1)[-1], w.block, w.queue[len(self.prefix):],
                 now) for w in workers if w.name not in self.alive]
        rows += [("x", name, now) for name in self.alive - names]
        self.alive = names
        return rows


class RunDatabase:
    """A run's monitoring database; a kernel observer. ``close()`` is idempotent.

    Args:
        run_dir: the run directory (the file goes in it, mode 0600).
        run_id: the run's id.
    """

    def __init__(self, run_dir: str, run_id: str):
        self.path = os.path.join(run_dir, DB_NAME)
        private_file(self.path)
        self._rows: deque = deque()
        self._wake = threading.Event()
        self._taken = threading.Event()  # set each time the feeder takes the queued rows
        self._closed = False
        conn = sqlite3.connect(self.path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            conn.execute("INSERT OR REPLACE INTO run (run_id, run_dir, hostname, log, "
                         "time_began) VALUES (?, ?, ?, ?, ?)",
                         (run_id, run_dir, socket.gethostname(),
                          os.path.join(run_dir, "celeriac.log"), time.time()))
            conn.commit()
        finally:
            conn.close()
        for suffix in ("-wal", "-shm"):  # the WAL holds the same data: private too
            if os.path.exists(self.path + suffix):
                os.chmod(self.path + suffix, 0o600)
        self._run_id = run_id
        self._roster = None
        #: () -> {States: n}, the kernel's counts, written each flush for a live status
        self.state_counts = None
        self._writer = subprocess.Popen(
            [sys.executable, "-I", monitoring_writer.__file__, self.path],
            stdin=subprocess.PIPE, bufsize=0, close_fds=True)
        self._thread = threading.Thread(target=carry(self._feed_loop), daemon=True,
                                        name="celeriac-monitoring")
        self._thread.start()

    # ------------------------------------------------------------------ observer (hot path)

    def submitted(self, record) -> None:
        depends = record.depends
        deps = [f.tid for f in depends if getattr(f, "tid", None) is not None] if depends else ()
        rows = self._rows
        rows.append(("s", record.id, record.func_name, record.kind, record.executor, deps,
                     record.time_invoked))
        if len(rows) > MAX_BACKLOG:  # the writer is far behind: wait for the feeder
            self._throttle()

    def _throttle(self) -> None:
        """Wait (the GIL released) until the feeder has taken the queued rows, so that a writer
        starved of CPU bounds the orchestrator's memory instead of growing it."""
        rows, taken = self._rows, self._taken
        while len(rows) > MAX_BACKLOG // 2 and not self._closed and self._thread.is_alive():
            taken.clear()
            self._wake.set()
            taken.wait(0.1)

    def moved(self, record, start: States, finish: States, exception) -> None:
        # Three short tuples for a plain task (submitted, launched, finished), which the
        # writer folds into one row; the submission and end times are the record's own.
        # ``_value_``, not ``.value`` (a property) nor hashing the enum: this runs per move.
        state = finish._value_
        rows = self._rows
        if state == "launched":
            rows.append(("l", record.id, record.try_id, time.time()))
        elif state in _FINAL:
            rows.append(("f", record.id, start._value_, state, record.time_returned,
                         record.try_id, None if exception is None else error_text(exception)))
        else:
            rows.append(("m", record.id, start._value_, state, time.time(), record.try_id,
                         None if exception is None else error_text(exception)))

    def ran_on(self, call_ids: list, worker: str) -> None:
        """The outcomes of these tries (Celery ids ``<run>.<task>.<try>``) came from
        ``worker`` (its ``name@host``); called by the link's listener before it completes
        their futures, so the row precedes the try's end."""
        self._rows.append(("w", call_ids, worker))  # the writer parses the ids
        roster = self._roster
        if roster is not None and worker not in roster.alive:
            roster.due = True  # a worker not seen yet: read its heartbeat (block) while
            self._wake.set()   # it is there (once per worker)

    def watch_workers(self, transport, run_id: str) -> None:
        """Record this run's workers (joined, left) from their heartbeats on the broker,
        read through the run's ``transport`` every :data:`HEARTBEAT_SECONDS` by the feeder
        thread."""
        self._roster = _Roster(transport, run_id)

    def block(self, executor: str, block: str, state: str, job_id: Optional[str] = None) -> None:
        """A block of ``executor`` was submitted, started running, or ended."""
        self._rows.append(("b", executor, block, job_id, time.time(), state))

    def close(self) -> None:
        """Write what is queued, record the run's end, and stop the writer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=60)
        try:
            self._writer.wait(timeout=120)
        except subprocess.TimeoutExpired:
            logger.warning("the run database's writer did not finish in 120 s: stopping it")
            self._writer.kill()
            self._writer.wait()
        try:
            conn = sqlite3.connect(self.path)
            with conn:
                conn.execute("UPDATE run SET time_ended = ? WHERE run_id = ?",
                             (time.time(), self._run_id))
            conn.close()
        except sqlite3.Error as e:
            logger.warning("could not record the run's end in %s: %s", self.path, e)

    # ------------------------------------------------------------------ the feeder

    def _feed_loop(self) -> None:
        pipe = self._writer.stdin.fileno()
        last_counts = last_roster = 0.0
        try:
            while True:
                closing = self._closed
                rows = self._rows
                n = len(rows)
                batch = [rows.popleft() for _ in range(n)]
                self._taken.set()
                now = time.time()
                if self.state_counts is not None and (n or now - last_counts
                                                      >= HEARTBEAT_SECONDS):
                    last_counts = now
                    batch.append(("c", {s.value: c for s, c in self.state_counts().items()},
                                  now))
                if self._roster is not None and not closing and (
                        self._roster.due or now - last_roster >= HEARTBEAT_SECONDS):
                    last_roster = now
                    batch.extend(self._roster.changes(now))
                if batch:
                    try:
                        data, fmt = marshal.dumps(batch), b"m"
                    except ValueError:  # a str subclass somewhere (an app's name): pickle
                        data, fmt = pickle.dumps(batch, protocol=5), b"p"
                    os.write(pipe, struct.pack("!Q", len(data)) + fmt)
                    _write_all(pipe, data)
                if closing:
                    return
                self._wake.wait(FLUSH_SECONDS)
                self._wake.clear()
        except Exception:
            logger.exception("the run database %s stopped recording", self.path)
        finally:
            self._rows = deque(maxlen=0)  # nobody will take rows now: drop them as they come
            try:
                self._writer.stdin.close()
            except OSError:
                pass


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a blocking pipe (no copy of what is left after each write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
