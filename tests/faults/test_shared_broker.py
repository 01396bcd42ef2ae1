"""Several runs on one broker: a task held by a killed worker comes back to its own run, once,
whichever run's sweeper notices the death first."""

import os
import signal
import time

import pytest
from ledger import Figures, Ledger, mark

from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
from celeriac.orchestrator.broker import EmbeddedRedis
from celeriac.orchestrator.dflow import DataFlowKernel

TASKS_PER_RUN = 2  # the first runs when its worker is killed, the second waits in the queue


def hold(ledger_dir, key, seconds):
    mark(ledger_dir, key)
    time.sleep(seconds)
    return key.upper()


def running_pid(ledger, key, timeout=90):
    """The pid of the process that started running ``key`` (from its ledger mark)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir(ledger.dir):
            if name.split(".")[0] == key:
                return int(name.split(".")[1])
        time.sleep(0.05)
    raise AssertionError(f"task {key} never started")


@pytest.mark.parametrize("runs", [2, 4])
@pytest.mark.timeout(300)
def test_every_run_gets_back_the_tasks_of_its_killed_worker(tmp_path, runs, caplog):
    broker = EmbeddedRedis(str(tmp_path / "redis")).start()
    dfks = []
    try:
        for i in range(runs):
            dfks.append(DataFlowKernel(Config(
                [CeleryExecutor(label="solo", workers_per_node=1)], broker=broker.url,
                run_dir=str(tmp_path / f"run{i}"))))
        ledger = Ledger(tmp_path)
        futures = {}
        for i, dfk in enumerate(dfks):
            app = python_app(hold, data_flow_kernel=dfk)
            for k in range(TASKS_PER_RUN):
                key = f"r{i}t{k}"
                futures[key] = app(ledger.dir, key, 5)
        # every run's worker is killed while it runs its first task: whichever run's sweeper
        # sees the deaths first, every run must take back its own task
        pids = [running_pid(ledger, f"r{i}t0") for i in range(runs)]
        time.sleep(2)  # the workers have said they run them (the log can then name them)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        figures = ledger.figures(futures, {k: k.upper() for k in futures}, timeout=90)
        assert figures == Figures(submitted=runs * TASKS_PER_RUN, correct=runs * TASKS_PER_RUN,
                                  lost=0, ran_twice=runs, hung=0)
        for i, dfk in enumerate(dfks):
            assert futures[f"r{i}t0"].task_record.lost_count == 1
            assert futures[f"r{i}t1"].task_record.lost_count == 0
            taken_back = [r.getMessage() for r in caplog.records
                          if r.getMessage().startswith(f"task {dfk.run_id}.")]
            assert len(taken_back) == 1, taken_back
            assert all("its worker celeriac-solo-" in m and "died while holding it" in m
                       for m in taken_back), taken_back
    finally:
        for dfk in dfks:
            dfk.cleanup()
        broker.stop()
