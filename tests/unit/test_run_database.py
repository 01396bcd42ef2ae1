"""The run database (monitoring.sqlite3) and the end-of-run summary, for a real workflow on
the ThreadPoolExecutor: a retry, a dependency failure, a memo hit."""

import itertools
import os
import sqlite3
import threading
import time

import pytest

import celeriac
from celeriac import Config, python_app
from celeriac.errors import DependencyError


def tries_then_ok(failures: int):
    count = itertools.count(1)

    @python_app
    def flaky():
        n = next(count)
        if n <= failures:
            raise ValueError(f"try {n} failed")
        return n

    return flaky


@python_app
def boom():
    raise RuntimeError("kaboom in boom")


@python_app
def double(x):
    return 2 * x


@python_app(cache=True)
def cached(x):
    return x + 1


def rows(db, sql, *args):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def run_workflow(dfk):
    flaky = tries_then_ok(1)()
    bad = double(boom())
    first = cached(3)
    assert first.result(timeout=5) == 4
    hit = cached(3)
    assert flaky.result(timeout=5) == 2
    with pytest.raises(DependencyError):
        bad.result(timeout=5)
    assert hit.result(timeout=5) == 4
    return flaky.tid, bad.tid, hit.tid


def test_the_database_holds_each_task_its_transitions_and_tries(load_dfk):
    dfk = load_dfk(retries=1)
    flaky, bad, hit = run_workflow(dfk)
    boom_tid = bad - 1
    dfk.cleanup()
    db = os.path.join(dfk.run_dir, "monitoring.sqlite3")
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    tasks = {r[0]: r[1:] for r in rows(
        db, "SELECT task_id, app, executor, state, tries, dependencies, error FROM tasks")}
    assert len(tasks) == 5
    assert tasks[flaky][:4] == ("flaky", "threads", "exec_done", 2)
    # the retry: two tries, the first failed with the app's error, the second ok
    tries = rows(db, "SELECT try, executor, outcome, error, time_sent <= time_ended "
                     "FROM all_tries WHERE task_id = ? ORDER BY try", flaky)
    assert [(t[0], t[1], t[2], t[4]) for t in tries] == [(1, "threads", "failed", 1),
                                                         (2, "threads", "ok", 1)]
    assert "ValueError: try 1 failed" in tries[0][3]
    assert [s for (s,) in rows(db, "SELECT state FROM all_transitions WHERE task_id = ? "
                                   "ORDER BY n", flaky)] == [
        "pending", "launched", "pending", "launched", "exec_done"]
    # boom failed (after its one retry); double never ran: dep_fail, naming its dependency
    assert tasks[boom_tid][2:4] == ("failed", 2)
    assert "RuntimeError: kaboom in boom" in tasks[boom_tid][5]
    assert tasks[bad][2:5] == ("dep_fail", 0, str(boom_tid))
    assert "DependencyError" in tasks[bad][5]
    assert rows(db, "SELECT depends_on FROM dependencies WHERE task_id = ?", bad) == [
        (boom_tid,)]
    # the memo hit: never launched
    assert tasks[hit][:4] == ("cached", "threads", "memo_done", 0)
    assert rows(db, "SELECT count(*) FROM all_tries WHERE task_id = ?", hit) == [(0,)]
    # the plain tasks' paths and tries, derived from their rows by the views
    first = hit - 1
    for tid, path in ((first, ["pending", "launched", "exec_done"]),
                      (hit, ["pending", "memo_done"]), (bad, ["pending", "dep_fail"])):
        assert [s for (s,) in rows(db, "SELECT state FROM all_transitions WHERE task_id = ? "
                                       "ORDER BY n", tid)] == path
    assert rows(db, "SELECT try, executor, outcome, time_sent <= time_ended FROM all_tries "
                    "WHERE task_id = ?", first) == [(1, "threads", "ok", 1)]
    # ... so only the retried tasks have rows of their own in transitions and tries
    assert rows(db, "SELECT DISTINCT task_id FROM transitions ORDER BY task_id") == [
        (flaky,), (boom_tid,)]
    assert rows(db, "SELECT DISTINCT task_id FROM tries ORDER BY task_id") == [
        (flaky,), (boom_tid,)]
    # the indexes were built when the run ended
    assert {n for (n,) in rows(db, "SELECT name FROM sqlite_master WHERE type = 'index' "
                                   "AND name NOT LIKE 'sqlite_%'")} == {
        "tasks_state", "tasks_app_state", "dependencies_task", "dependencies_on",
        "transitions_task"}
    # every finished task has its times, in order
    assert rows(db, "SELECT count(*) FROM tasks WHERE time_finished IS NULL OR "
                    "time_finished < time_submitted") == [(0,)]
    (run_id, began, ended), = rows(db, "SELECT run_id, time_began, time_ended FROM run")
    assert run_id == dfk.run_id and began <= ended


def test_status_of_a_live_run_shows_its_running_and_waiting_tasks(load_dfk):
    from celeriac.orchestrator.runview import status_text
    dfk = load_dfk()
    gate = threading.Event()

    @python_app
    def held():
        gate.wait(30)
        return 1

    first = held()
    second = double(first)
    try:
        deadline = time.monotonic() + 20
        while True:  # the feeder flushes every half second
            text = status_text(dfk.run_dir)
            if "launched 1" in text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert text.splitlines()[1].endswith(", still running")
        assert "tasks 2: pending 1, launched 1; 0 retries" in text
    finally:
        gate.set()
    assert second.result(timeout=10) == 2
    dfk.cleanup()
    assert "tasks 2: exec_done 2; 0 retries" in status_text(dfk.run_dir)


def test_the_summary_is_logged_at_cleanup(load_dfk):
    dfk = load_dfk(retries=1)
    run_workflow(dfk)
    dfk.cleanup()
    with open(os.path.join(dfk.run_dir, "celeriac.log")) as f:
        log = f.read()
    assert "celeriac: 5 tasks in" in log
    assert "exec_done 2, memo_done 1, failed 1, dep_fail 1; 2 retries" in log
    assert "  flaky: exec_done 1" in log
    assert "  boom: failed 1" in log
    assert "first error of boom: task 1: RuntimeError: kaboom in boom" in log
    assert f"database: {dfk.run_dir}/monitoring.sqlite3" in log


class MonitoringHub:
    """What a Parsl config passes as monitoring= (only its type's name matters here)."""

    def __init__(self, hub_address="127.0.0.1", hub_port=55055):
        self.hub_address, self.hub_port = hub_address, hub_port


@pytest.mark.parametrize("option, recorded", [(False, False), (None, False),
                                              (MonitoringHub(), True)])
def test_config_monitoring_turns_the_database_on_or_off(load_dfk, option, recorded):
    dfk = load_dfk(monitoring=option)
    assert double(2).result(timeout=5) == 4
    dfk.cleanup()
    db = os.path.join(dfk.run_dir, "monitoring.sqlite3")
    assert os.path.exists(db) is recorded
    if recorded:
        assert rows(db, "SELECT app, state FROM tasks") == [("double", "exec_done")]


def test_the_database_is_private_to_its_user(dfk):
    assert double(1).result(timeout=5) == 2
    dfk.cleanup()
    for name in os.listdir(dfk.run_dir):
        if name.startswith("monitoring.sqlite3"):
            assert os.stat(os.path.join(dfk.run_dir, name)).st_mode & 0o077 == 0, name


def test_progress_must_be_true_or_false():
    with pytest.raises(celeriac.errors.ConfigurationError, match="progress"):
        Config(progress="yes")


def test_status_of_a_killed_run_builds_the_missing_indexes(dfk):
    from celeriac.orchestrator.runview import status_text
    assert double(1).result(timeout=5) == 2
    dfk.cleanup()
    db = os.path.join(dfk.run_dir, "monitoring.sqlite3")
    conn = sqlite3.connect(db)  # as a killed run leaves it: no indexes, no end, silent
    with conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                    "AND name NOT LIKE 'sqlite_%'").fetchall():
            conn.execute(f"DROP INDEX {name}")
        conn.execute("UPDATE run SET time_ended = NULL, time_seen = 0")
    conn.close()
    text = status_text(dfk.run_dir)
    assert "still running (or was killed)" in text and "tasks 1: exec_done 1" in text
    assert rows(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND "
                    "name NOT LIKE 'sqlite_%'") == [(5,)]
