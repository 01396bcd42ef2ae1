"""The run database's writer process, and the database's schema (standard library only, so
the process starts fast: it is run as a script, ``python monitoring_writer.py DB``)."""

from __future__ import annotations

import pickle
import sqlite3
import struct
import sys

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    run_id TEXT PRIMARY KEY, run_dir TEXT, hostname TEXT, log TEXT,
    time_began REAL, time_ended REAL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id INTEGER PRIMARY KEY, app TEXT NOT NULL, kind TEXT, executor TEXT,
    dependencies TEXT, time_submitted REAL, time_launched REAL, time_finished REAL,
    state TEXT NOT NULL, tries INTEGER NOT NULL DEFAULT 0, error TEXT);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
CREATE INDEX IF NOT EXISTS tasks_app_state ON tasks (app, state);
CREATE TABLE IF NOT EXISTS dependencies (task_id INTEGER NOT NULL, depends_on INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS dependencies_task ON dependencies (task_id);
CREATE INDEX IF NOT EXISTS dependencies_on ON dependencies (depends_on);
CREATE TABLE IF NOT EXISTS transitions (task_id INTEGER NOT NULL, state TEXT NOT NULL,
                                        time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS transitions_task ON transitions (task_id);
CREATE TABLE IF NOT EXISTS tries (
    task_id INTEGER NOT NULL, try INTEGER NOT NULL, executor TEXT, host TEXT, block TEXT,
    time_sent REAL, time_ended REAL, outcome TEXT, error TEXT, PRIMARY KEY (task_id, try));
CREATE TABLE IF NOT EXISTS blocks (
    executor TEXT NOT NULL, block TEXT NOT NULL, job_id TEXT, time_submitted REAL,
    time_running REAL, time_ended REAL, state TEXT, PRIMARY KEY (executor, block));
"""

_WRITE_TASK = ("INSERT OR REPLACE INTO tasks (app, kind, executor, dependencies, "
               "time_submitted, time_launched, time_finished, state, tries, error, task_id) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_DEP = "INSERT INTO dependencies (task_id, depends_on) VALUES (?, ?)"
_INSERT_MOVE = "INSERT INTO transitions (task_id, state, time) VALUES (?, ?, ?)"
_WRITE_TRY = ("INSERT OR REPLACE INTO tries (task_id, try, executor, time_sent, time_ended, "
              "outcome, error) VALUES (?, ?, ?, ?, ?, ?, ?)")
_BLOCK = ("INSERT INTO blocks (executor, block, job_id, time_submitted, state) "
          "VALUES (?, ?, ?, ?, ?) ON CONFLICT (executor, block) DO UPDATE SET "
          "state = excluded.state, job_id = coalesce(excluded.job_id, job_id), "
          "time_running = CASE WHEN excluded.state = 'running' "
          "THEN coalesce(time_running, excluded.time_submitted) ELSE time_running END, "
          "time_ended = CASE WHEN excluded.state IN ('ended', 'cancelled', 'failed') "
          "THEN coalesce(time_ended, excluded.time_submitted) ELSE time_ended END")

_FINAL = frozenset({"exec_done", "memo_done", "failed", "dep_fail"})


class _Writer:
    """The writer process's side: folds each batch and commits it."""

    def __init__(self):
        self._open_tasks: dict = {}   # rows of unfinished tasks, by id
        self._open_tries: dict = {}   # ... and of tries still running, by (task id, try)

    def write_batch(self, conn, rows) -> None:
        """Write the queued rows in one transaction. Each task and try touched in the batch
        is written once, as it stands at the batch's end (a fast task: one row), so the
        cost per task stays a few rows whatever the number of moves."""
        open_tasks, open_tries = self._open_tasks, self._open_tries
        tasks, tries, deps, moves, blocks = {}, {}, [], [], []
        for row in rows:
            if row[0] == "m":
                _, tid, start, finish, t, try_id, executor, error = row
                moves.append((tid, finish, t))
                task = open_tasks[tid]
                task[7] = finish
                task[8] = try_id
                if finish == "launched":
                    if task[5] is None:
                        task[5] = t
                    open_tries[(tid, try_id)] = tries[(tid, try_id)] = [
                        tid, try_id, executor, t, None, None, None]
                elif start == "launched":
                    attempt = open_tries.pop((tid, try_id), None)
                    if attempt is not None:
                        attempt[4] = t
                        attempt[5] = ("ok" if finish in ("exec_done", "joining")
                                      else "failed")
                        attempt[6] = error
                        tries[(tid, try_id)] = attempt
                if finish in _FINAL:
                    task[6] = t
                    task[9] = error
                    del open_tasks[tid]
                tasks[tid] = task
            elif row[0] == "s":
                _, tid, app, kind, executor, dep_ids, t = row
                tasks[tid] = open_tasks[tid] = [
                    app, kind, executor, ",".join(map(str, dep_ids)), t, None, None,
                    "pending", 0, None, tid]
                moves.append((tid, "pending", t))
                deps.extend((tid, d) for d in dep_ids)
            else:
                _, executor, block, job_id, t, state = row
                blocks.append((executor, block, job_id, t, state))
        with conn:  # one transaction per batch
            conn.executemany(_WRITE_TASK, tasks.values())
            conn.executemany(_INSERT_DEP, deps)
            conn.executemany(_INSERT_MOVE, moves)
            conn.executemany(_WRITE_TRY, tries.values())
            conn.executemany(_BLOCK, blocks)


def serve(path: str) -> None:
    """The writer process: read pickled batches from stdin until it closes, writing each."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL: the file survives a crash of celeriac
    writer, stream = _Writer(), sys.stdin.buffer
    try:
        while True:
            head = stream.read(8)
            if len(head) < 8:
                return
            (size,) = struct.unpack("!Q", head)
            data = stream.read(size)
            if len(data) < size:
                return
            writer.write_batch(conn, pickle.loads(data))
    finally:
        conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
