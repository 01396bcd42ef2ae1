"""The run database's writer records where each try ran and the run's workers: a plain
task's one try and each try of a retried task get the worker's host and block."""

import sqlite3

from celeriac.orchestrator.monitoring_writer import SCHEMA, _Writer


def test_tries_get_the_host_and_block_of_their_worker():
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    writer = _Writer()
    a, b = "celeriac-celery-b0-1-0.1@node7", "celeriac-celery-b1-2-0.1@node8"
    writer.write_batch(conn, [
        ("j", a, "node7", "0", "celery", 10.0),
        ("s", 0, "plain", "python", "celery", [], 11.0),
        ("s", 1, "flaky", "python", "celery", [], 11.0),
        ("l", 0, 1, 12.0), ("l", 1, 1, 12.0),
        ("w", ["run.0.1"], a), ("f", 0, "launched", "exec_done", 13.0, 1, None),
        ("w", ["run.1.1"], a), ("m", 1, "launched", "pending", 13.0, 1, "ValueError: once"),
        ("l", 1, 2, 14.0),
        ("j", b, "node8", "1", "celery", 14.0),
        ("w", ["run.1.2"], b), ("f", 1, "launched", "exec_done", 15.0, 2, None),
        ("x", a, 16.0),
    ])
    writer.flush(conn)
    tries = conn.execute("SELECT task_id, try, host, block, outcome FROM all_tries "
                         "ORDER BY task_id, try").fetchall()
    assert tries == [(0, 1, "node7", "0", "ok"), (1, 1, "node7", "0", "failed"),
                     (1, 2, "node8", "1", "ok")]
    assert conn.execute("SELECT name, host, block, time_joined, time_left FROM workers "
                        "ORDER BY name").fetchall() == [(a, "node7", "0", 10.0, 16.0),
                                                        (b, "node8", "1", 14.0, None)]


def test_a_worker_not_in_the_roster_still_names_its_host():
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    writer = _Writer()
    writer.write_batch(conn, [("s", 0, "app", "python", "celery", [], 1.0), ("l", 0, 1, 2.0),
                              ("w", ["run.0.1"], "by-hand@laptop"),
                              ("f", 0, "launched", "failed", 3.0, 1, "boom")])
    writer.flush(conn)
    assert conn.execute("SELECT host, block, worker FROM all_tries").fetchall() == [
        ("laptop", None, "by-hand@laptop")]
