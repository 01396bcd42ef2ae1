"""Two DataFlowKernels in one process each keep their own celeriac.log: a record goes to the
log of the run it was emitted for, whether it comes from the user's thread, the run's thread
pool, its retry timer or a future callback, and never to the other run's log."""

import threading

import tenacity

from celeriac import Config, DataFlowKernel, python_app
from celeriac.executors import ThreadPoolExecutor


def _failing(name):
    def body():
        raise ValueError(f"{name} always fails")
    body.__name__ = name
    return body


def _log(dfk):
    with open(f"{dfk.run_dir}/celeriac.log") as fh:
        return fh.read()


def test_each_dfk_logs_only_its_own_run(tmp_path):
    waits = tenacity.Retrying(stop=tenacity.stop_after_attempt(3),
                              wait=tenacity.wait_fixed(0.05))  # relaunched by the timer thread
    dfks = {name: DataFlowKernel(Config([ThreadPoolExecutor(label="threads")], retries=2,
                                        run_dir=str(tmp_path / name)))
            for name in ("alpha", "beta")}
    try:
        def work(name):
            dfk = dfks[name]
            plain = python_app(_failing(f"fail_{name}"), data_flow_kernel=dfk)
            backoff = python_app(_failing(f"backoff_{name}"), data_flow_kernel=dfk,
                                 retry_policy=waits)
            upstream = plain()
            futures = [plain() for _ in range(5)] + [backoff() for _ in range(3)]
            # launched from a callback of the run's own pool thread, failing as a dependency
            futures.append(python_app(_failing(f"child_{name}"), data_flow_kernel=dfk)(upstream))
            for f in futures + [upstream]:
                f.exception(timeout=10)

        threads = [threading.Thread(target=work, args=(n,)) for n in dfks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
    finally:
        for dfk in dfks.values():
            dfk.cleanup()
    for name, other in (("alpha", "beta"), ("beta", "alpha")):
        log, dfk = _log(dfks[name]), dfks[name]
        assert f"DFK started: run {dfk.run_id}" in log
        assert f"(fail_{name}) failed on try 1" in log      # pool thread, in a callback
        assert f"(backoff_{name}) failed after 3 tries" in log  # after the timer's relaunch
        assert "DFK cleanup" in log
        assert other not in log, [line for line in log.splitlines() if other in line]
        assert dfks[other].run_id not in log
