"""The run database records where each try ran (the worker's host and block, signed with
its outcome) and the run's workers (joined, left); ``celeriac status`` and the report show
the host of a failed task."""

import os
import socket
import sqlite3

import pytest

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
from celeriac.orchestrator.report import write_report
from celeriac.orchestrator.runview import status_text

pytestmark = pytest.mark.integration


def _flaky_on_disk(marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise OSError("first try fails")
    return "ok"


def _broken():
    raise RuntimeError("broken on purpose")


def _inc(x):
    return x + 1


@pytest.mark.timeout(180)
def test_tries_name_their_worker_host_and_block(tmp_path):
    flaky, broken, inc = python_app(_flaky_on_disk), python_app(_broken), python_app(_inc)
    config = Config([CeleryExecutor(label="celery", workers_per_node=2)], retries=1,
                    run_dir=str(tmp_path / "runinfo"))
    celeriac.clear()
    with celeriac.load(config) as dfk:
        assert flaky(str(tmp_path / "marker")).result(timeout=60) == "ok"
        assert [f.result(timeout=60) for f in [inc(i) for i in range(20)]] == list(
            range(1, 21))
        assert isinstance(broken().exception(timeout=60), RuntimeError)
    conn = sqlite3.connect(os.path.join(dfk.run_dir, "monitoring.sqlite3"))
    try:
        tries = conn.execute("SELECT task_id, try, outcome, host, block, worker "
                             "FROM all_tries ORDER BY task_id, try").fetchall()
        workers = conn.execute("SELECT name, host, block, executor, time_joined "
                               "FROM workers").fetchall()
    finally:
        conn.close()
    host = socket.gethostname()
    # every try of the run: the retried one (both tries), 20 plain ones, the failed one twice
    assert len(tries) == 2 + 20 + 2
    assert {(t[3], t[4]) for t in tries} == {(host, "0")}, tries
    assert [t[:3] for t in tries if t[0] == 0] == [(0, 1, "failed"), (0, 2, "ok")]
    # the run's two workers, both of block 0, as their heartbeats named them
    assert sorted((w[1], w[2], w[3]) for w in workers) == [(host, "0", "celery")] * 2
    assert {t[5] for t in tries} <= {w[0] for w in workers}
    assert all(w[4] is not None for w in workers)

    status = status_text(dfk.run_dir)
    assert "workers 2 (" in status and f"{host} 2" in status, status
    assert f"failed: task 21 (_broken) on {host}: RuntimeError: broken on purpose" in status
    with open(write_report(dfk.run_dir), encoding="utf-8") as f:
        assert f"<td class='host'>{host} (block 0)</td>" in f.read()
