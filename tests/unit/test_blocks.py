"""The block manager against an in-memory provider and queue: what it starts, cancels and
reports, and how it counts the slots of blocks, workers by hand and autoscaled workers."""

import logging

import pytest

from celeriac.errors import ExecutorError, ProviderError, ScaleOutFailed
from celeriac.orchestrator.blocks import MAX_BLOCK_FAILURES, BlockManager, Capacity
from celeriac.providers.base import ExecutionProvider, JobState, JobStatus
from celeriac.wire.alive import LiveWorker


class MemoryProvider(ExecutionProvider):
    """A scheduler in a dict: jobs stay where the test puts them."""

    label = "memory"

    def __init__(self, **limits):
        super().__init__(**limits)
        self.jobs: dict[str, JobStatus] = {}
        self.commands: list[str] = []
        self.refuse_submit = self.refuse_cancel = None

    def submit(self, command, tasks_per_node, job_name="celeriac"):
        if self.refuse_submit:
            raise ScaleOutFailed(self.label, "sbatch exited with 1", stderr=self.refuse_submit)
        job = f"job{len(self.jobs)}"
        self.jobs[job] = JobStatus(JobState.PENDING)
        self.commands.append(command)
        return job

    def status(self, job_ids):
        return [self.jobs[j] for j in job_ids]

    def cancel(self, job_ids):
        if self.refuse_cancel:
            raise ProviderError(self.label, "scancel failed", "", self.refuse_cancel)
        for j in job_ids:
            self.jobs[j] = JobStatus(JobState.CANCELLED)
        return [True] * len(job_ids)


class MemoryQueue:
    """A queue whose tasks and live workers the test sets."""

    def __init__(self, outstanding=0):
        self.tasks = outstanding
        self.live: list[LiveWorker] = []
        self.failed_with = None

    def outstanding(self):
        return self.tasks

    def last_done(self):
        return None

    def workers(self):
        return list(self.live)

    def fail_all(self, error):
        self.failed_with = error


def worker(name, block=None, slots=1, ready=True, supervisor=None, max_slots=None):
    return LiveWorker(name, "q", block, slots, ready, supervisor=supervisor,
                      max_slots=max_slots)


def manager(provider, queue, **options):
    options = {"max_idletime": 60.0, "start_timeout": 30.0, **options}
    return BlockManager("ex", provider, queue, command=lambda b: f"start block {b}",
                        output=lambda r: "module: gromacs not found", by_hand="celeriac worker "
                        "--run-file w.json --executor ex", **options)


def run(provider, job, state):
    provider.jobs[job] = JobStatus(state, exit_code=1 if state is JobState.FAILED else None)


# ----------------------------------------------------------------- capacity

def test_capacity_counts_blocks_workers_by_hand_and_an_autoscaler_at_its_maximum():
    workers = [worker("a", block="0", slots=2), worker("b", block="0", slots=2),
               worker("c", slots=4),                                  # by hand, no supervisor
               worker("d", supervisor="s1", max_slots=6),             # autoscale 6,1: 1 now
               worker("e", supervisor="s2"), worker("f", supervisor="s2"),  # plain, 2 procs
               worker("g", block="9", slots=8)]                       # another run's block
    capacity = Capacity.of(workers, ["0", "1"])
    assert capacity.blocks == {"0": 4, "1": 0}
    assert capacity.by_hand == 4 + 6 + 2 + 8


def test_a_grown_pool_counts_what_it_runs_beyond_its_autoscale_maximum():
    workers = [worker(str(i), supervisor="s", max_slots=2) for i in range(3)]
    assert Capacity.of(workers, []).by_hand == 3


# ----------------------------------------------------------------- scaling

def test_waiting_tasks_start_blocks_up_to_max_blocks_and_pending_ones_are_not_started_again():
    provider = MemoryProvider(init_blocks=0, min_blocks=0, max_blocks=3)
    queue = MemoryQueue(outstanding=10)
    blocks = manager(provider, queue)
    blocks.strategize()
    assert blocks.blocks == {"0": "job0", "1": "job1", "2": "job2"}
    assert provider.commands == ["start block 0", "start block 1", "start block 2"]
    blocks.strategize()                      # still PENDING in the scheduler: no more jobs
    assert len(provider.jobs) == 3


def test_workers_by_hand_with_enough_slots_start_no_block():
    provider = MemoryProvider(init_blocks=0, min_blocks=0, max_blocks=3)
    queue = MemoryQueue(outstanding=4)
    queue.live = [worker("hand", supervisor="s", slots=1, max_slots=4)]  # --autoscale 4,1
    blocks = manager(provider, queue)
    blocks.strategize()
    assert blocks.blocks == {} and blocks.capacity.by_hand == 4


def test_idle_blocks_are_cancelled_and_a_refused_cancel_is_tried_again():
    provider = MemoryProvider(init_blocks=0, min_blocks=0, max_blocks=2)
    queue = MemoryQueue(outstanding=2)
    blocks = manager(provider, queue, max_idletime=0)
    blocks.strategize()
    run(provider, "job0", JobState.RUNNING)
    run(provider, "job1", JobState.RUNNING)
    queue.live = [worker("w0", block="0"), worker("w1", block="1")]
    queue.tasks = 0
    provider.refuse_cancel = "Socket timed out"
    blocks.strategize()
    assert blocks.active == ["0", "1"]      # the scheduler said no: nothing counts as done
    provider.refuse_cancel = None
    blocks.strategize()
    assert provider.jobs["job0"].state is JobState.CANCELLED
    assert provider.jobs["job1"].state is JobState.CANCELLED
    blocks.strategize()
    assert blocks.active == []


def test_shutdown_cancels_every_block_and_is_harmless_twice():
    provider = MemoryProvider(init_blocks=2, min_blocks=0, max_blocks=2)
    blocks = manager(provider, MemoryQueue())
    blocks.start(period=3600)
    assert sorted(blocks.blocks) == ["0", "1"]
    blocks.shutdown()
    blocks.shutdown()
    assert all(s.state is JobState.CANCELLED for s in provider.jobs.values())
    assert blocks.scale_out(1) == []         # a shut manager starts nothing


# ----------------------------------------------------------------- failing blocks

def test_blocks_that_end_before_a_worker_connects_fail_the_queue_with_their_output():
    provider = MemoryProvider(init_blocks=1, min_blocks=0, max_blocks=1)
    queue = MemoryQueue(outstanding=1)
    blocks = manager(provider, queue)
    blocks.scale_out(1)
    for i in range(MAX_BLOCK_FAILURES):
        run(provider, f"job{i}", JobState.FAILED)
        blocks.strategize()                  # judges the failed block, then replaces it
    assert isinstance(queue.failed_with, ExecutorError)
    message = str(queue.failed_with)
    assert f"{MAX_BLOCK_FAILURES} blocks in a row failed to start" in message
    assert "exit code 1" in message and "module: gromacs not found" in message
    assert blocks.broken is queue.failed_with
    assert len(provider.jobs) == MAX_BLOCK_FAILURES   # nothing started after the last


def test_a_block_whose_workers_connected_may_end_without_counting_as_a_failure():
    provider = MemoryProvider(init_blocks=1, min_blocks=0, max_blocks=1)
    queue = MemoryQueue(outstanding=1)
    blocks = manager(provider, queue)
    blocks.scale_out(1)
    run(provider, "job0", JobState.RUNNING)
    queue.live = [worker("w", block="0")]
    blocks.strategize()
    run(provider, "job0", JobState.TIMEOUT)  # its walltime ended
    queue.live = []
    blocks.strategize()
    assert blocks.broken is None and queue.failed_with is None
    assert list(blocks.blocks) == ["0", "1"]  # replaced: the task still waits


def test_a_scheduler_that_refuses_every_block_fails_the_queue_in_its_words():
    provider = MemoryProvider(init_blocks=0, min_blocks=0, max_blocks=1)
    provider.refuse_submit = "sbatch: error: Invalid account"
    queue = MemoryQueue(outstanding=1)
    blocks = manager(provider, queue)
    for _ in range(MAX_BLOCK_FAILURES):
        blocks.strategize()
    assert "Invalid account" in str(queue.failed_with)


def test_tasks_waiting_with_no_worker_and_no_block_to_come_are_reported_with_the_command(
        caplog):
    queue = MemoryQueue(outstanding=3)
    blocks = manager(None, queue)
    with caplog.at_level(logging.WARNING):
        blocks.strategize()
        blocks.strategize()                  # not again within the minute
    [record] = [r for r in caplog.records if "no worker serving" in r.getMessage()]
    assert "it has no provider" in record.getMessage()
    assert "celeriac worker --run-file w.json --executor ex" in record.getMessage()


@pytest.mark.parametrize("hand_slots, warned", [(0, True), (1, False)])
def test_a_worker_by_hand_silences_the_unserved_warning(caplog, hand_slots, warned):
    queue = MemoryQueue(outstanding=3)
    queue.live = [worker("w", slots=hand_slots)] if hand_slots else []
    with caplog.at_level(logging.WARNING):
        manager(None, queue).strategize()
    assert ("no worker serving" in caplog.text) is warned
