"""Two Celery runs in one process, each with its own embedded broker and workers: each run's
celeriac.log holds its own records, including those its broker link's threads emit (the
listener completes futures and decides retries), and none of the other run's."""

import pytest

from celeriac import Config, DataFlowKernel, python_app
from celeriac.executors import CeleryExecutor


def _failing(name):
    def body():
        raise ValueError(f"{name} always fails")
    body.__name__ = name
    return body


@pytest.mark.timeout(120)
def test_two_celery_runs_in_one_process_keep_separate_logs(tmp_path):
    dfks = {}
    try:
        for name in ("alpha", "beta"):
            dfks[name] = DataFlowKernel(Config([CeleryExecutor(max_workers_per_node=1)],
                                               retries=1, run_dir=str(tmp_path / name)))
        futures = {name: [python_app(_failing(f"fail_{name}"), data_flow_kernel=dfk)()
                          for _ in range(3)] for name, dfk in dfks.items()}
        for name, futs in futures.items():
            for f in futs:
                assert isinstance(f.exception(timeout=60), ValueError)
    finally:
        for dfk in dfks.values():
            dfk.cleanup()
    for name, other in (("alpha", "beta"), ("beta", "alpha")):
        with open(f"{dfks[name].run_dir}/celeriac.log") as fh:
            log = fh.read()
        retried = [line for line in log.splitlines() if f"(fail_{name}) failed on try 1" in line]
        assert len(retried) == 3
        assert any(" celeriac-listener " in line for line in retried), retried
        assert "embedded Redis started" in log and "local block" in log
        assert other not in log and dfks[other].run_id not in log, \
            [line for line in log.splitlines() if other in line or dfks[other].run_id in line]
