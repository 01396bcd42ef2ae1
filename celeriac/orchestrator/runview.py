"""Reading a run database (live or finished): finding the run, and ``celeriac status``'s text.

Only reads: the run writes on while ``celeriac status`` looks (SQLite's WAL lets both).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from typing import Optional

from celeriac.errors import ConfigurationError
from celeriac.orchestrator.monitoring import DB_NAME
from celeriac.orchestrator.monitoring_writer import create_indexes

__all__ = ["find_run", "connect", "status_text", "STATE_ORDER"]

STATE_ORDER = ("pending", "launched", "joining", "exec_done", "memo_done", "failed", "dep_fail")
#: a run not heard from for this long (seconds) is taken as dead (its writer flushes often)
LIVE_SECONDS = 10.0
_NUMBERED = re.compile(r"^\d{3,}$")


def find_run(path: Optional[str] = None) -> str:
    """The run directory to read: ``path`` itself when it holds a run database, else the
    newest numbered run under it that does (default ``./runinfo``).

    Raises:
        ConfigurationError: no run database there, saying where it looked.
    """
    base = path or "runinfo"
    if os.path.isfile(os.path.join(base, DB_NAME)):
        return os.path.abspath(base)
    if os.path.isdir(base):
        runs = sorted((n for n in os.listdir(base) if _NUMBERED.match(n)
                       and os.path.isfile(os.path.join(base, n, DB_NAME))), key=int)
        if runs:
            return os.path.abspath(os.path.join(base, runs[-1]))
    raise ConfigurationError(
        f"no run database ({DB_NAME}) in {os.path.abspath(base)!r} or its numbered run "
        "directories; give the run directory (e.g. runinfo/003) of a run made with "
        "monitoring on (the default)")


def connect(run_dir: str) -> sqlite3.Connection:
    """A read-only connection to the run database of ``run_dir``; first builds its indexes
    when they are missing and no run is writing it (a killed run's writer never built
    them; a live run's writer builds them when it ends)."""
    path = os.path.join(run_dir, DB_NAME)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        indexed = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND "
                               "name = 'tasks_state'").fetchone()
        live = _live(conn)
    finally:
        conn.close()
    if not indexed and not live:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=10)) as rw:
                create_indexes(rw)
        except sqlite3.Error:  # read-only copy, say: reading works, just slower
            pass
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def _live(conn) -> bool:
    """Whether a run is writing this database now: not ended, and heard from lately."""
    row = conn.execute("SELECT time_ended, time_seen FROM run").fetchone()
    return bool(row and row[0] is None and row[1] is not None
                and time.time() - row[1] < LIVE_SECONDS)


def _when(t: Optional[float]) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def status_text(run_dir: str) -> str:
    """What ``celeriac status`` prints: the run, its tasks per state and per app, and the
    first failures."""
    conn = connect(run_dir)
    try:
        run = conn.execute("SELECT * FROM run").fetchone()
        live = _live(conn)
        # a live run's counts: the kernel's own, as of its last flush (exact, and cheap)
        counts = dict(conn.execute("SELECT state, n FROM live_counts WHERE n > 0") if live
                      else conn.execute("SELECT state, count(*) FROM tasks GROUP BY state"))
        per_app = conn.execute(
            "SELECT app, state, count(*) AS n FROM tasks GROUP BY app, state").fetchall()
        # only a retried task has rows in tries (a plain task's one try is derived)
        retries = conn.execute("SELECT count(*) FROM tries WHERE outcome = 'failed' AND "
                               "try < (SELECT tries FROM tasks WHERE task_id = tries.task_id)"
                               ).fetchone()[0]
        failures = conn.execute(
            "SELECT task_id, app, error FROM tasks WHERE state = 'failed' ORDER BY task_id "
            "LIMIT 5").fetchall()
        blocks = conn.execute("SELECT state, count(*) FROM blocks GROUP BY state").fetchall()
        workers, where = _workers(conn, [row["task_id"] for row in failures])
    finally:
        conn.close()
    ended = run["time_ended"] if run else None
    began = run["time_began"] if run else None
    total = sum(counts.values())
    lines = [f"run {run['run_id'] if run else '?'} in {run_dir}",
             f"began {_when(began)}, " + (f"ended {_when(ended)} ({ended - began:.1f} s)"
                                          if ended else "still running" if live
                                          else "still running (or was killed)"),
             f"tasks {total}: " + ", ".join(f"{s} {counts[s]}" for s in STATE_ORDER
                                             if counts.get(s)) + f"; {retries} retries"]
    apps: dict = {}
    for row in per_app:
        apps.setdefault(row["app"], {})[row["state"]] = row["n"]
    width = max((len(a) for a in apps), default=3)
    for app in sorted(apps):
        lines.append(f"  {app:<{width}}  " + ", ".join(
            f"{s} {apps[app][s]}" for s in STATE_ORDER if apps[app].get(s)))
    if blocks:
        lines.append("blocks: " + ", ".join(f"{s} {n}" for s, n in blocks))
    if workers:
        lines.append(workers)
    for row in failures:
        host = where.get(row["task_id"])
        lines.append(f"failed: task {row['task_id']} ({row['app']})"
                     f"{f' on {host}' if host else ''}: {last_error_line(row['error'])}")
    return "\n".join(lines)


def _workers(conn, failed: list) -> tuple:
    """(a line on the run's workers and their hosts, or "", {failed task id: host of its
    last try}); empty for a database of an older celeriac, which did not record them."""
    try:
        hosts = conn.execute("SELECT host, count(*), count(time_left) FROM workers "
                             "GROUP BY host ORDER BY host").fetchall()
        where = {tid: host for tid, host in conn.execute(
            "SELECT task_id, host FROM all_tries WHERE host IS NOT NULL AND task_id IN "
            f"({','.join('?' * len(failed))}) ORDER BY try", failed)} if failed else {}
    except sqlite3.OperationalError:
        return "", {}
    if not hosts:
        return "", where
    joined, left = sum(h[1] for h in hosts), sum(h[2] for h in hosts)
    return (f"workers {joined} ({left} left): " + ", ".join(
        f"{host} {n}" for host, n, _left in hosts)), where


def last_error_line(error: Optional[str]) -> str:
    """The line of a stored traceback that names the exception (not celeriac's notes)."""
    lines = [ln for ln in (error or "").strip().splitlines()
             if ln.strip() and not ln.startswith("celeriac: task")]
    return lines[-1] if lines else "(no error text)"
