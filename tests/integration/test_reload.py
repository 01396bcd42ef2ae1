"""A Config loaded a second time (a new DFK on the same executor objects) runs, as in Parsl."""

import os
import time

import pytest
from services import processes_mentioning

from celeriac import Config, DataFlowKernel, python_app
from celeriac.executors import CeleryExecutor

pytestmark = pytest.mark.integration


def worker_pid():
    return os.getpid()


@pytest.mark.timeout(120)
def test_the_same_config_runs_twice_on_fresh_workers_and_leaves_none(tmp_path):
    config = Config([CeleryExecutor(label="again", max_workers_per_node=1)],
                    run_dir=str(tmp_path))
    pids, run_files = [], []
    for _ in range(2):
        with DataFlowKernel(config) as dfk:
            pids.append(python_app(worker_pid, data_flow_kernel=dfk)().result(timeout=60))
            run_files.append(os.path.join(dfk.run_dir, "worker.json"))
    assert pids[0] != pids[1] and os.getpid() not in pids
    deadline = time.monotonic() + 30
    while any(processes_mentioning(f) for f in run_files):
        assert time.monotonic() < deadline, "workers of a finished run are still running"
        time.sleep(0.5)
