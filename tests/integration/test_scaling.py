"""Blocks scaled by the strategy, blocks that fail to start, worker options, and workers
that outlive their orchestrator; all with LocalProvider blocks of real `celeriac worker`s."""

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from services import wait_until

import celeriac
from celeriac import Config, python_app
from celeriac.errors import ExecutorError, ProviderError, ScaleOutFailed
from celeriac.executors import CeleryExecutor
from celeriac.orchestrator.broker import EmbeddedRedis
from celeriac.providers import LocalProvider
from celeriac.providers.base import ExecutionProvider, JobState

pytestmark = pytest.mark.integration

FAST = {"strategy_period": 0.5}


@python_app
def where(seconds=0.0):
    from celery import current_task
    time.sleep(seconds)
    return current_task.request.hostname


@python_app
def placement(seconds=0.0):
    time.sleep(seconds)
    return os.environ.get("CUDA_VISIBLE_DEVICES"), sorted(os.sched_getaffinity(0))


def workers_of(ex):
    return [w for w in ex._link.transport.live_workers() if w.queue == ex.queue]


def block_of(hostname):
    return re.search(r"-b(\d+)-", hostname).group(1)


def all_cancelled(ex):
    statuses = ex.provider.status(list(ex.blocks.values()))
    if all(s.state is JobState.CANCELLED for s in statuses):
        return True
    for s in statuses:  # say why, for the next person who meets a failure here
        print(s, open(s.stderr_path).read()[-2000:] if s.stderr_path else "")
    return False


# ----------------------------------------------------------------- scaling

@pytest.mark.timeout(120)
def test_a_burst_scales_out_to_max_blocks_then_back_to_min_blocks_when_idle(tmp_path):
    ex = CeleryExecutor(label="scale", workers_per_node=1,
                        provider=LocalProvider(init_blocks=0, min_blocks=0, max_blocks=2))
    with celeriac.load(Config([ex], run_dir=str(tmp_path), max_idletime=3, **FAST)):
        assert ex.blocks == {}                            # init_blocks=0: nothing yet
        hosts = [f.result(timeout=90) for f in [where(1) for _ in range(8)]]
        assert len(ex.blocks) == 2                        # never above max_blocks
        assert {block_of(h) for h in hosts} == {"0", "1"}  # both blocks served
        idle_from = time.monotonic()
        wait_until(lambda: ex.active_blocks == [], 40, "idle blocks are cancelled")
        assert time.monotonic() - idle_from >= 2.5        # not before max_idletime
        assert all_cancelled(ex) and len(ex.blocks) == 2
        assert block_of(where().result(timeout=60)) == "2"  # new work: a new block


@pytest.mark.timeout(120)
def test_cleanup_cancels_blocks_scaled_out_during_the_run(tmp_path):
    ex = CeleryExecutor(label="grow", workers_per_node=1,
                        provider=LocalProvider(init_blocks=0, min_blocks=0, max_blocks=2))
    dfk = celeriac.load(Config([ex], run_dir=str(tmp_path), max_idletime=600, **FAST))
    try:
        [f.result(timeout=90) for f in [where(0.5) for _ in range(6)]]
        assert len(ex.active_blocks) == 2
    finally:
        dfk.cleanup()
        dfk.cleanup()
    assert all_cancelled(ex)
    ex.shutdown()  # again: harmless


@pytest.mark.timeout(120)
def test_a_worker_started_by_hand_with_enough_slots_stops_scale_out(tmp_path):
    ex = CeleryExecutor(label="mixed", workers_per_node=1,
                        provider=LocalProvider(init_blocks=0, min_blocks=0, max_blocks=2))
    with celeriac.load(Config([ex], run_dir=str(tmp_path), **FAST)) as dfk:
        worker = subprocess.Popen([
            sys.executable, "-m", "celeriac", "worker", "--run-file",
            os.path.join(dfk.run_dir, "worker.json"), "--executor", "mixed",
            "--processes", "1", "--pool", "threads", "--concurrency", "4"])
        try:
            wait_until(lambda: any(w.ready for w in workers_of(ex)), 60, "the worker connects")
            hosts = [f.result(timeout=60) for f in [where(1) for _ in range(4)]]
            time.sleep(1.5)                                 # a few more scaling rounds
            assert ex.blocks == {}
            assert all("-b" not in h for h in hosts)
        finally:
            worker.terminate()
            worker.wait(timeout=30)


@pytest.mark.timeout(120)
def test_strategy_none_keeps_init_blocks(tmp_path):
    ex = CeleryExecutor(label="fixed", workers_per_node=1,
                        provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=3))
    with celeriac.load(Config([ex], run_dir=str(tmp_path), strategy="none", max_idletime=0,
                              **FAST)):
        hosts = [f.result(timeout=90) for f in [where(0.3) for _ in range(6)]]
        time.sleep(1.5)
        assert list(ex.blocks) == ["0"] and ex.active_blocks == ["0"]
        assert {block_of(h) for h in hosts} == {"0"}


# ----------------------------------------------------------------- failing blocks

@pytest.mark.timeout(120)
def test_block_whose_job_exits_fails_tasks_with_its_own_words(tmp_path, caplog):
    provider = LocalProvider(worker_init='echo "module: gromacs/2024 not found" >&2; exit 1')
    with celeriac.load(Config([CeleryExecutor(label="exits", provider=provider)],
                              run_dir=str(tmp_path), **FAST)):
        with pytest.raises(ExecutorError) as info:
            where().result(timeout=90)
    message = str(info.value)
    assert "3 blocks in a row failed to start" in message
    assert "gromacs/2024 not found" in message and "exit code 1" in message
    assert caplog.text.count("failed to start (") == 3  # each failure is logged


@pytest.mark.timeout(120)
def test_block_whose_workers_never_connect_fails_after_the_start_timeout(tmp_path):
    provider = LocalProvider(worker_init='echo "waiting for a license server" >&2; '
                                         'exec sleep 600')
    ex = CeleryExecutor(label="silent", provider=provider, worker_start_timeout=2)
    start = time.monotonic()
    with celeriac.load(Config([ex], run_dir=str(tmp_path), **FAST)):
        with pytest.raises(ExecutorError) as info:
            where().result(timeout=90)
        assert time.monotonic() - start < 40
        assert "none of its workers connected" in str(info.value)
        assert "waiting for a license server" in str(info.value)
        wait_until(lambda: all_cancelled(ex), 30, "the silent blocks are cancelled")
        assert len(ex.blocks) == 3


class RefusingProvider(ExecutionProvider):
    """A provider double whose scheduler refuses every job."""

    label = "refusing"

    def __init__(self):
        super().__init__(init_blocks=1, min_blocks=0, max_blocks=2)
        self.submits = 0

    def submit(self, command, tasks_per_node, job_name="celeriac"):
        self.submits += 1
        raise ScaleOutFailed(self.label, "sbatch exited with 1",
                             stderr="sbatch: error: Invalid account or account/partition")

    def status(self, job_ids):
        raise AssertionError("no job was ever started")

    def cancel(self, job_ids):
        raise AssertionError("no job was ever started")


@pytest.mark.timeout(60)
def test_provider_that_refuses_blocks_fails_tasks_quoting_the_scheduler(tmp_path):
    provider = RefusingProvider()
    with celeriac.load(Config([CeleryExecutor(label="refused", provider=provider)],
                              run_dir=str(tmp_path), **FAST)):
        with pytest.raises(ExecutorError, match="Invalid account or account/partition"):
            where().result(timeout=30)
        with pytest.raises(ExecutorError):  # later calls fail at once
            where().result(timeout=5)
    assert provider.submits == 3


# ----------------------------------------------------------------- worker options

@pytest.mark.timeout(120)
def test_each_worker_process_gets_its_own_accelerator_and_cores(tmp_path):
    ex = CeleryExecutor(label="gpus", max_workers_per_node=5,
                        available_accelerators=["gpu-a", "gpu-b"], cpu_affinity="block",
                        prefetch_multiplier=1,
                        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))
    with celeriac.load(Config([ex], run_dir=str(tmp_path), **FAST)):
        wait_until(lambda: sum(w.ready for w in workers_of(ex)) == 2, 60, "2 workers connect")
        time.sleep(1.5)
        assert len(workers_of(ex)) == 2                   # min(5, 2 GPUs, 2 cores)
        seen = {(gpu, tuple(cpus)) for gpu, cpus in
                [f.result(timeout=60) for f in [placement(0.3) for _ in range(10)]]}
    cores = sorted(os.sched_getaffinity(0))
    assert seen == {("gpu-a", (cores[0],)), ("gpu-b", (cores[1],))}


def test_no_worker_fitting_on_the_node_is_reported_in_the_workers_words(tmp_path):
    ex = CeleryExecutor(label="huge", mem_per_worker=10**6)
    with celeriac.load(Config([ex], run_dir=str(tmp_path), **FAST)):
        with pytest.raises(ExecutorError, match="no worker fits on this node"):
            where().result(timeout=90)


# ----------------------------------------------------------------- orphaned workers

ORCHESTRATOR = textwrap.dedent("""
    import sys, time
    import celeriac
    from celeriac import Config, python_app
    from celeriac.executors import CeleryExecutor

    @python_app
    def double(x):
        return 2 * x

    dfk = celeriac.load(Config([CeleryExecutor(label="pool", provider=None)],
                               broker=sys.argv[1], run_dir=sys.argv[2]))
    print(dfk.run_dir, flush=True)
    print(double(21).result(timeout=60), flush=True)
    time.sleep(600)
""")


@pytest.mark.timeout(120)
def test_worker_of_a_killed_orchestrator_exits_after_its_idle_timeout(tmp_path):
    from celeriac.wire.keys import ORCHESTRATOR_TTL
    broker = EmbeddedRedis(str(tmp_path / "redis")).start()  # outlives the orchestrator
    orchestrator = worker = None
    try:
        orchestrator = subprocess.Popen(
            [sys.executable, "-c", ORCHESTRATOR, broker.url, str(tmp_path / "runs")],
            stdout=subprocess.PIPE, text=True)
        run_dir = orchestrator.stdout.readline().strip()
        worker = subprocess.Popen([sys.executable, "-m", "celeriac", "worker", "--run-file",
                                   os.path.join(run_dir, "worker.json"), "--executor", "pool",
                                   "--processes", "1", "--idle-timeout", "2"])
        assert orchestrator.stdout.readline().strip() == "42"
        time.sleep(4)  # idle for longer than the timeout, but its orchestrator is alive
        assert worker.poll() is None
        orchestrator.kill()
        orchestrator.wait()
        killed = time.monotonic()
        worker.wait(timeout=ORCHESTRATOR_TTL + 2 + 20)
        assert worker.returncode == 0
        assert time.monotonic() - killed < ORCHESTRATOR_TTL + 2 + 10
    finally:
        for proc in (orchestrator, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        broker.stop()


class CancelRefusedOnceProvider(LocalProvider):
    """A LocalProvider whose first cancel fails, as scancel does when the scheduler (or the
    SSH connection to it) is briefly down."""

    def __init__(self, **options):
        super().__init__(**options)
        self.cancel_calls = 0

    def cancel(self, job_ids, grace: float = 10.0):
        self.cancel_calls += 1
        if self.cancel_calls == 1:
            raise ProviderError(self.label, "scancel failed", "", "Socket timed out")
        return super().cancel(job_ids, grace)


@pytest.mark.timeout(90)
def test_a_cancel_the_scheduler_refused_is_tried_again(tmp_path):
    provider = CancelRefusedOnceProvider(init_blocks=1, min_blocks=0, max_blocks=1)
    ex = CeleryExecutor(label="retrycancel", workers_per_node=1, provider=provider)
    with celeriac.load(Config([ex], run_dir=str(tmp_path), max_idletime=1, **FAST)):
        assert where().result(timeout=60).startswith("celeriac-retrycancel")
        wait_until(lambda: all_cancelled(ex), 30, "the idle block is cancelled")
    assert provider.cancel_calls >= 2


class StatusFailsProvider(LocalProvider):
    """A LocalProvider whose status command always fails (squeue missing on the host)."""

    def status(self, job_ids):
        raise ProviderError(self.label, "`squeue` failed with exit code 127", "",
                            "bash: squeue: command not found")


@pytest.mark.timeout(90)
def test_blocks_whose_state_cannot_be_read_fail_the_tasks_in_the_schedulers_words(tmp_path):
    provider = StatusFailsProvider(worker_init="exec sleep 600")
    ex = CeleryExecutor(label="blind", provider=provider, worker_start_timeout=2)
    with celeriac.load(Config([ex], run_dir=str(tmp_path), **FAST)):
        with pytest.raises(ExecutorError, match="squeue: command not found"):
            where().result(timeout=60)
    assert provider._cancelled == set(ex.blocks.values())  # given back all the same
