"""Configs that used to hang a run in silence: no block can ever start, so the tasks wait for
workers started by hand. The run says so at load and while the tasks wait, and a worker
started by hand then runs every task."""

import os
import subprocess
import sys
import time

import pytest
from ledger import Figures, Ledger, mark

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
from celeriac.providers import LocalProvider


@python_app
def triple(ledger_dir, key):
    mark(ledger_dir, key)
    return 3 * key


def _wait_for_line(path, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as fh:
            lines = [line for line in fh if text in line]
        if lines:
            return lines[0]
        time.sleep(0.2)
    with open(path) as fh:
        raise AssertionError(f"{text!r} not logged within {timeout}s; the log:\n{fh.read()}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("provider", [LocalProvider(init_blocks=0, max_blocks=0), None],
                         ids=["max_blocks=0", "provider=None"])
def test_tasks_waiting_with_no_block_to_come_are_reported_then_run_by_a_worker_by_hand(
        tmp_path, provider):
    ledger = Ledger(tmp_path)
    config = Config([CeleryExecutor(label="byhand", provider=provider)],
                    run_dir=str(tmp_path / "runinfo"), strategy_period=0.5)
    with celeriac.load(config) as dfk:
        log = os.path.join(dfk.run_dir, "celeriac.log")
        run_file = os.path.join(dfk.run_dir, "worker.json")
        if provider is not None:  # said at load: this config never starts a worker itself
            line = _wait_for_line(log, "will never start a block", 5)
            assert "max_blocks=0" in line and f"--run-file {run_file} --executor byhand" in line
        futures = {k: triple(ledger.dir, k) for k in range(3)}
        line = _wait_for_line(log, "tasks have waited", 15)
        assert "WARNING" in line and "3 tasks" in line
        assert "no worker serving its queue" in line
        assert ("max_blocks=0" if provider is not None else "it has no provider") in line
        assert f"celeriac worker --run-file {run_file} --executor byhand" in line
        worker = subprocess.Popen([sys.executable, "-m", "celeriac", "worker", "--run-file",
                                   run_file, "--executor", "byhand", "--processes", "1"],
                                  env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        try:
            figures = ledger.figures(futures, {k: 3 * k for k in futures}, timeout=60)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert figures == Figures(submitted=3, correct=3, lost=0, ran_twice=0, hung=0)
