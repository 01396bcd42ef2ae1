"""The run database's writer process, and the database's schema (standard library only, so
the process starts fast: it is run as a script, ``python monitoring_writer.py DB``).

What a plain task costs is kept to one row, written when it is submitted and rewritten when it
ends (a task that starts and ends within one batch: a single INSERT). A plain task is one that
went pending -> launched -> final on one try (or pending -> final): its transitions and its try
follow from its row's times, so the views ``all_transitions`` and ``all_tries`` derive them.
Only the other tasks (retried, relaunched after a lost worker, joined) get rows in
``transitions`` and ``tries``. The secondary indexes are built when the stream ends (the run
closed or died), not maintained row by row during the run.
"""

from __future__ import annotations

import marshal
import os
import pickle
import queue
import sqlite3
import struct
import sys
import threading
import time
import traceback
from typing import Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    run_id TEXT PRIMARY KEY, run_dir TEXT, hostname TEXT, log TEXT,
    time_began REAL, time_ended REAL, time_seen REAL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id INTEGER PRIMARY KEY, app TEXT NOT NULL, kind TEXT, executor TEXT,
    dependencies TEXT, time_submitted REAL, time_launched REAL, time_finished REAL,
    state TEXT NOT NULL, tries INTEGER NOT NULL DEFAULT 0, error TEXT,
    detailed INTEGER NOT NULL DEFAULT 0, worker TEXT);
CREATE TABLE IF NOT EXISTS dependencies (task_id INTEGER NOT NULL, depends_on INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS transitions (task_id INTEGER NOT NULL, n INTEGER NOT NULL,
                                        state TEXT NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tries (
    task_id INTEGER NOT NULL, try INTEGER NOT NULL, executor TEXT, host TEXT, block TEXT,
    time_sent REAL, time_ended REAL, outcome TEXT, error TEXT, worker TEXT,
    PRIMARY KEY (task_id, try));
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY, host TEXT, block TEXT, executor TEXT, time_joined REAL,
    time_left REAL);
CREATE TABLE IF NOT EXISTS blocks (
    executor TEXT NOT NULL, block TEXT NOT NULL, job_id TEXT, time_submitted REAL,
    time_running REAL, time_ended REAL, state TEXT, PRIMARY KEY (executor, block));
CREATE TABLE IF NOT EXISTS live_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE VIEW IF NOT EXISTS all_transitions (task_id, n, state, time) AS
    SELECT task_id, n, state, time FROM transitions
    UNION ALL SELECT task_id, 0, 'pending', time_submitted FROM tasks WHERE detailed = 0
    UNION ALL SELECT task_id, 1, 'launched', time_launched FROM tasks
        WHERE detailed = 0 AND time_launched IS NOT NULL
    UNION ALL SELECT task_id, 1 + (time_launched IS NOT NULL), state, time_finished FROM tasks
        WHERE detailed = 0 AND time_finished IS NOT NULL;
CREATE VIEW IF NOT EXISTS all_tries (task_id, try, executor, host, block, time_sent,
                                     time_ended, outcome, error, worker) AS
    SELECT t.task_id, t.try, t.executor,
        coalesce(t.host, w.host, substr(t.worker, instr(t.worker, '@') + 1)),
        coalesce(t.block, w.block), t.time_sent, t.time_ended, t.outcome, t.error, t.worker
        FROM tries t LEFT JOIN workers w ON w.name = t.worker
    UNION ALL SELECT t.task_id, 1, t.executor,
        coalesce(w.host, substr(t.worker, instr(t.worker, '@') + 1)), w.block,
        t.time_launched, t.time_finished,
        CASE t.state WHEN 'exec_done' THEN 'ok' WHEN 'failed' THEN 'failed' END,
        CASE t.state WHEN 'failed' THEN t.error END, t.worker
        FROM tasks t LEFT JOIN workers w ON w.name = t.worker
        WHERE t.detailed = 0 AND t.time_launched IS NOT NULL;
"""

#: built when the run's stream ends (see :func:`create_indexes`), not during the run
INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
CREATE INDEX IF NOT EXISTS tasks_app_state ON tasks (app, state);
CREATE INDEX IF NOT EXISTS dependencies_task ON dependencies (task_id);
CREATE INDEX IF NOT EXISTS dependencies_on ON dependencies (depends_on);
CREATE INDEX IF NOT EXISTS transitions_task ON transitions (task_id);
"""

_INSERT_TASK = ("INSERT OR REPLACE INTO tasks (app, kind, executor, dependencies, "
                "time_submitted, time_launched, time_finished, state, tries, error, detailed, "
                "task_id, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_UPDATE_TASK = ("UPDATE tasks SET time_launched = ?, time_finished = ?, state = ?, tries = ?, "
                "error = ?, detailed = ?, worker = ? WHERE task_id = ?")
_INSERT_DEP = "INSERT INTO dependencies (task_id, depends_on) VALUES (?, ?)"
_INSERT_MOVE = "INSERT INTO transitions (task_id, n, state, time) VALUES (?, ?, ?, ?)"
_WRITE_TRY = ("INSERT OR REPLACE INTO tries (task_id, try, executor, time_sent, time_ended, "
              "outcome, error, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_JOINED = ("INSERT INTO workers (name, host, block, executor, time_joined) VALUES "
           "(?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET time_left = NULL")
_LEFT = "UPDATE workers SET time_left = ? WHERE name = ?"
_BLOCK = ("INSERT INTO blocks (executor, block, job_id, time_submitted, state) "
          "VALUES (?, ?, ?, ?, ?) ON CONFLICT (executor, block) DO UPDATE SET "
          "state = excluded.state, job_id = coalesce(excluded.job_id, job_id), "
          "time_running = CASE WHEN excluded.state = 'running' "
          "THEN coalesce(time_running, excluded.time_submitted) ELSE time_running END, "
          "time_ended = CASE WHEN excluded.state IN ('ended', 'cancelled', 'failed') "
          "THEN coalesce(time_ended, excluded.time_submitted) ELSE time_ended END")

# a task's row, as a list: the columns of _INSERT_TASK (the worker of its last try last), then
# the number of its moves so far and whether its row is in the table yet
_SUBMITTED, _LAUNCHED, _FINISHED, _STATE, _TRIES, _ERROR, _DETAILED, _WORKER, _MOVES, _WRITTEN = (
    4, 5, 6, 7, 8, 9, 10, 12, 13, 14)
_COLUMNS = 13
_TRY_WORKER = 7  # in a try's row
#: an unfinished plain task's row waits this long (seconds) after its last change before it
#: is written, so a task that ends meanwhile costs one write, not one per state
HOLD_SECONDS = 1.0
#: the writer's niceness (its writing thread runs at the idle priority, where Linux allows)
NICE = 10
#: batches read but not yet written before the writer stops reading its pipe
QUEUED_BATCHES = 4


def create_indexes(conn) -> None:
    """Build the indexes that keep a large run queryable (idempotent)."""
    conn.executescript(INDEXES)


class _Writer:
    """The writer process's side: folds each batch and commits it."""

    def __init__(self):
        self._open_tasks: dict = {}   # rows of unfinished tasks, by id
        self._open_tries: dict = {}   # ... and of detailed tasks' running tries, by (id, try)
        self._held: dict = {}         # rows changed but not yet written, by task id

    def write_batch(self, conn, rows) -> None:
        """Write the queued rows in one transaction. Each task touched in the batch is
        written at most once, as it stands at the batch's end; an unfinished plain task only
        once it has stood still for :data:`HOLD_SECONDS` (so a fast task is one INSERT)."""
        open_tasks, open_tries = self._open_tasks, self._open_tries
        tasks, tries, deps, moves, blocks, workers, counts = {}, {}, [], [], [], [], None
        for row in rows:
            kind = row[0]
            if kind == "l":  # launched: (l, id, try, time)
                _, tid, try_id, t = row
                task = open_tasks[tid]
                task[_STATE] = "launched"
                task[_TRIES] = try_id
                if task[_LAUNCHED] is None:
                    task[_LAUNCHED] = t
                if task[_DETAILED]:
                    self._move(task, "launched", t, moves)
                    open_tries[(tid, try_id)] = tries[(tid, try_id)] = [
                        tid, try_id, task[2], t, None, None, None, None]
                tasks[tid] = task
            elif kind == "f":  # finished: (f, id, start, state, time, try, error)
                _, tid, start, finish, t, try_id, error = row
                task = open_tasks.pop(tid)
                task[_STATE], task[_FINISHED], task[_ERROR] = finish, t, error
                if task[_DETAILED]:
                    self._move(task, finish, t, moves)
                    if start == "launched":
                        self._end_try(tid, try_id, finish, t, error, tries)
                tasks[tid] = task
            elif kind == "s":  # submitted: (s, id, app, kind, executor, deps, time)
                _, tid, app, tkind, executor, dep_ids, t = row
                tasks[tid] = open_tasks[tid] = [
                    app, tkind, executor, ",".join(map(str, dep_ids)) if dep_ids else "", t,
                    None, None, "pending", 0, None, 0, tid, None, 1, 0]
                if dep_ids:
                    deps.extend((tid, d) for d in dep_ids)
            elif kind == "m":  # a retry, a relaunch or a join: (m, id, start, state, ...)
                _, tid, start, finish, t, try_id, error = row
                task = open_tasks[tid]
                if not task[_DETAILED]:  # store what the plain path held until now
                    task[_DETAILED] = 1
                    moves.append((tid, 0, "pending", task[_SUBMITTED]))
                    if task[_LAUNCHED] is not None:
                        task[_MOVES] = 2
                        moves.append((tid, 1, "launched", task[_LAUNCHED]))
                        open_tries[(tid, 1)] = [tid, 1, task[2], task[_LAUNCHED], None,
                                                None, None, task[_WORKER]]
                task[_STATE] = finish
                self._move(task, finish, t, moves)
                if start == "launched":
                    self._end_try(tid, try_id, finish, t, error, tries)
                tasks[tid] = task
            elif kind == "w":  # where tries ran: (w, [<run>.<id>.<try>, ...], worker)
                worker = row[2]
                for call_id in row[1]:
                    _run, tid, try_id = call_id.rsplit(".", 2)
                    tid, try_id = int(tid), int(try_id)
                    task = open_tasks.get(tid)
                    if task is not None and task[_TRIES] == try_id:
                        task[_WORKER] = worker
                        attempt = open_tries.get((tid, try_id))
                        if attempt is not None:
                            attempt[_TRY_WORKER] = worker
            elif kind == "j":  # a worker of the run appeared: (j, name, host, block, ...)
                workers.append((_JOINED, row[1:]))
            elif kind == "x":  # its heartbeat expired: (x, name, time)
                workers.append((_LEFT, (row[2], row[1])))
            elif kind == "b":
                _, executor, block, job_id, t, state = row
                blocks.append((executor, block, job_id, t, state))
            else:  # "c": the kernel's state counts, for a live `celeriac status`
                counts = row
        held = self._held
        held.update(tasks)
        inserts, updates = self._due(time.time())
        with conn:  # one transaction per batch
            conn.executemany(_INSERT_TASK, inserts)
            conn.executemany(_UPDATE_TASK, updates)
            if deps:
                conn.executemany(_INSERT_DEP, deps)
            if moves:
                conn.executemany(_INSERT_MOVE, moves)
            if tries:
                conn.executemany(_WRITE_TRY, tries.values())
            if blocks:
                conn.executemany(_BLOCK, blocks)
            for statement, values in workers:
                conn.execute(statement, values)
            if counts is not None:
                _, state_counts, t = counts
                conn.execute("DELETE FROM live_counts")
                conn.executemany("INSERT INTO live_counts (state, n) VALUES (?, ?)",
                                 state_counts.items())
                conn.execute("UPDATE run SET time_seen = ?", (t,))

    def _due(self, now: Optional[float]) -> tuple:
        """(inserts, updates) of the held rows due now (all of them when ``now`` is None)."""
        inserts, updates, held = [], [], self._held
        for tid, task in list(held.items()):
            if now is not None and task[_FINISHED] is None and not task[_DETAILED]:
                since = task[_LAUNCHED] if task[_LAUNCHED] is not None else task[_SUBMITTED]
                if now - since < HOLD_SECONDS:
                    continue
            del held[tid]
            if task[_WRITTEN]:
                updates.append((task[5], task[6], task[7], task[8], task[9], task[10],
                                task[_WORKER], tid))
            else:
                task[_WRITTEN] = 1
                inserts.append(task[:_COLUMNS])
        return inserts, updates

    def flush(self, conn) -> None:
        """Write every row still held (the stream ended)."""
        inserts, updates = self._due(None)
        with conn:
            conn.executemany(_INSERT_TASK, inserts)
            conn.executemany(_UPDATE_TASK, updates)

    @staticmethod
    def _move(task, state, t, moves) -> None:
        moves.append((task[11], task[_MOVES], state, t))
        task[_MOVES] += 1

    def _end_try(self, tid, try_id, finish, t, error, tries) -> None:
        attempt = self._open_tries.pop((tid, try_id), None)
        if attempt is not None:
            attempt[4] = t
            attempt[5] = "ok" if finish in ("exec_done", "joining") else "failed"
            attempt[6] = error
            tries[(tid, try_id)] = attempt


def _read_batches(stream):
    """The batches on ``stream`` (marshalled, or pickled when marshal refused one), until it
    closes."""
    while True:
        head = stream.read(9)
        if len(head) < 9:
            return
        (size,) = struct.unpack("!Q", head[:8])
        data = stream.read(size)
        if len(data) < size:
            return
        yield (marshal.loads if head[8:] == b"m" else pickle.loads)(data)


def _idle_priority() -> None:
    """Run the calling thread only on CPU the machine leaves idle (Linux ``SCHED_IDLE``,
    a per-thread setting); elsewhere it keeps the process's nice priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or refused
        pass


def serve(path: str) -> None:
    """The writer process: read batches from stdin until it closes, writing each; then build
    the indexes.

    While the run lasts, a thread at the idle priority writes the batches, so the run's own
    processes always come first; at most :data:`QUEUED_BATCHES` wait for it, after which the
    reading stops and the pipe fills (the orchestrator then bounds its own queue). When the
    stream ends, this (niced, not idle) thread writes what is left: an idle thread can never
    raise its own priority, and a busy machine must not keep a finished run waiting for it.
    """
    try:
        os.nice(NICE)
    except OSError:  # not allowed here: run at the normal priority
        pass
    conn = sqlite3.connect(path, timeout=60, check_same_thread=False)
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL: the file survives a crash of celeriac
    writer, batches, ended = _Writer(), queue.Queue(QUEUED_BATCHES), threading.Event()

    def write_while_running():
        _idle_priority()
        try:
            while not ended.is_set():
                try:
                    batch = batches.get(timeout=0.2)
                except queue.Empty:
                    continue
                writer.write_batch(conn, batch)
        except BaseException:  # as if the process had failed: the orchestrator's feeder
            traceback.print_exc()  # then sees its pipe close and stops recording, rather
            os._exit(1)            # than wait on a reader that no longer writes

    thread = threading.Thread(target=write_while_running, daemon=True)
    thread.start()
    try:
        for batch in _read_batches(sys.stdin.buffer):
            batches.put(batch)
        ended.set()
        thread.join()  # it ends after the batch it is writing, if any
        while not batches.empty():
            writer.write_batch(conn, batches.get_nowait())
        writer.flush(conn)
        create_indexes(conn)
    finally:
        ended.set()
        thread.join()
        conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
