"""The run database's feed is bounded: a writer that gets no CPU holds submissions back instead
of growing the orchestrator's memory, and nothing is lost once it runs again."""

import os
import signal
import sqlite3
import threading
import time

import pytest

from celeriac.orchestrator import monitoring
from celeriac.orchestrator.monitoring import RunDatabase
from celeriac.orchestrator.states import States, TaskRecord

TASKS = 20_000  # about 2 MB of rows: far more than the pipe between the two processes holds


def _run(database: RunDatabase, done: threading.Event) -> None:
    for i in range(TASKS):
        record = TaskRecord(i, None, "noop", "python", (), {}, "celery")
        database.submitted(record)
        record.try_id = 1
        record.move(States.launched)
        database.moved(record, States.pending, States.launched, None)
        record.move(States.exec_done)
        database.moved(record, States.launched, States.exec_done, None)
    done.set()


@pytest.mark.timeout(120)
def test_a_stopped_writer_bounds_the_queue_and_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(monitoring, "MAX_BACKLOG", 60)
    monkeypatch.setattr(monitoring, "FLUSH_SECONDS", 0.05)
    database = RunDatabase(str(tmp_path), "run")
    writer = database._writer.pid
    os.kill(writer, signal.SIGSTOP)  # a writer that gets no CPU at all
    try:
        done = threading.Event()
        submitter = threading.Thread(target=_run, args=(database, done), daemon=True)
        submitter.start()
        deadline, longest = time.monotonic() + 2, 0
        while time.monotonic() < deadline:
            longest = max(longest, len(database._rows))
            time.sleep(0.001)
        assert not done.is_set(), "the run went on although its writer could not keep up"
        # a submission may add its three rows after the check
        assert longest <= monitoring.MAX_BACKLOG + 3
    finally:
        os.kill(writer, signal.SIGCONT)
        assert done.wait(60)
        database.close()
    conn = sqlite3.connect(database.path)
    finished = conn.execute("SELECT count(*) FROM tasks WHERE state = 'exec_done'").fetchone()
    conn.close()
    assert finished == (TASKS,)


@pytest.mark.timeout(60)
def test_a_dead_writer_neither_hangs_the_run_nor_grows_its_memory(tmp_path, monkeypatch,
                                                                   caplog):
    monkeypatch.setattr(monitoring, "MAX_BACKLOG", 60)
    monkeypatch.setattr(monitoring, "FLUSH_SECONDS", 0.05)
    database = RunDatabase(str(tmp_path), "run")
    database._writer.kill()
    database._writer.wait()
    done = threading.Event()
    _run(database, done)  # the feeder finds the pipe closed on its next write, then stops
    assert done.is_set()
    database._thread.join(10)
    assert not database._thread.is_alive()
    _run(database, done)
    assert len(database._rows) == 0  # dropped, not kept for a writer that is gone
    database.close()
    assert "stopped recording" in caplog.text


@pytest.mark.timeout(60)
def test_a_writer_that_fails_on_a_batch_ends_instead_of_stalling_the_run(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(monitoring, "MAX_BACKLOG", 60)
    monkeypatch.setattr(monitoring, "FLUSH_SECONDS", 0.05)
    database = RunDatabase(str(tmp_path), "run")
    database._rows.append(("l", 999, 1, 0.0))  # a launch of a task it never heard of
    done = threading.Event()
    threading.Thread(target=_run, args=(database, done), daemon=True).start()
    try:
        assert done.wait(30), "the run stalled behind a writer that no longer writes"
        assert database._writer.wait(10) == 1
    finally:
        database.close()
