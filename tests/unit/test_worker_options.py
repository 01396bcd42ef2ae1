"""How `celeriac worker` sizes and pins its worker processes, and when an orphan leaves
(no broker, no processes)."""

import os

import pytest

from celeriac.errors import ConfigurationError
from celeriac.executors import CeleryExecutor
from celeriac.workers.liveness import READY_NOTE, AliveBeat, RunningNotes
from celeriac.workers.placement import Placement, worker_cpus
from celeriac.workers.run_end import OrphanClock

CORES8 = list(range(8))


@pytest.mark.parametrize("options, expected", [
    ({}, 8),                                                   # one per core
    ({"max_workers": 3}, 3),
    ({"cores_per_worker": 2}, 4),
    ({"cores_per_worker": 0.5}, 16),                           # oversubscribe on purpose
    ({"mem_per_worker": 5, "mem_gb": 16}, 3),
    ({"accelerators": ["0", "1"]}, 2),
    ({"accelerators": list("abcdefghij")}, 8),                 # more GPUs than cores
    ({"max_workers": 6, "cores_per_worker": 1, "mem_per_worker": 2, "mem_gb": 20,
      "accelerators": list("abcd")}, 4),
])
def test_workers_per_node_is_the_smallest_of_the_limits(options, expected):
    assert Placement(cores=CORES8, **options).count == expected


def test_node_where_no_worker_fits_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="no worker fits on this node.*memory"):
        Placement(cores=CORES8, mem_per_worker=64, mem_gb=16)
    with pytest.raises(ConfigurationError, match="limited by cores"):
        Placement(cores=[0, 1], cores_per_worker=4)


def test_node_memory_defaults_to_what_is_available_here():
    assert Placement(mem_per_worker=0.001).count >= 1


@pytest.mark.parametrize("policy, expected", [
    ("block", [[0, 1], [2, 3], [4, 5]]),                # core 6 and 7 stay unused, as in HTEX
    ("block-reverse", [[4, 5], [2, 3], [0, 1]]),
    ("alternating", [[0, 3, 6], [1, 4, 7], [2, 5]]),
])
def test_cpu_affinity_policies_give_each_worker_its_own_cores(policy, expected):
    assert [worker_cpus(policy, CORES8, 3, i) for i in range(3)] == expected


def test_placement_pins_only_when_asked():
    assert Placement(cores=CORES8, max_workers=2).cpus is None
    assert Placement(cores=CORES8, max_workers=2, cpu_affinity="block").cpus == \
        [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_more_workers_than_cores_cannot_be_pinned():
    with pytest.raises(ConfigurationError, match="needs a core per worker"):
        Placement(cores=[0, 1], cores_per_worker=0.5, cpu_affinity="block")


def test_unknown_cpu_affinity_is_refused_by_worker_and_executor():
    with pytest.raises(ConfigurationError, match="cpu_affinity"):
        Placement(cores=CORES8, cpu_affinity="compact")
    with pytest.raises(ConfigurationError, match="cpu_affinity must be one of"):
        CeleryExecutor(provider=None, cpu_affinity="compact")


@pytest.mark.parametrize("options, message", [
    ({"cores_per_worker": 0}, "cores_per_worker must be a finite number > 0"),
    ({"mem_per_worker": -1}, "mem_per_worker must be a finite number of GB > 0"),
    ({"max_workers_per_node": 0}, "max_workers_per_node must be an integer >= 1"),
    ({"workers_per_node": 2, "max_workers_per_node": 3}, "the same option"),
    ({"worker_idle_timeout": -5}, "worker_idle_timeout must be"),
    ({"available_accelerators": ["0,1"]}, "without commas"),
])
def test_impossible_executor_options_are_refused(options, message):
    with pytest.raises(ConfigurationError, match=message):
        CeleryExecutor(provider=None, **options)


def test_accelerators_given_as_a_count_are_numbered_from_zero():
    ex = CeleryExecutor(provider=None, available_accelerators=3, workers_per_node=2)
    assert ex.available_accelerators == ["0", "1", "2"]
    assert ex.max_workers_per_node == 2


# ----------------------------------------------------------------- orphans

class Orchestrator:
    present = True

    def seen(self):
        return self.present


def test_orphan_leaves_after_idle_timeout_without_orchestrator_or_task():
    orch = Orchestrator()
    clock = OrphanClock(orch.seen, timeout=10)
    assert not clock.expired(busy=False, now=0)       # orchestrator there
    orch.present = False
    assert not clock.expired(busy=False, now=100)     # orphan clock starts
    assert not clock.expired(busy=False, now=109)
    assert clock.expired(busy=False, now=110)


def test_a_running_task_or_a_returning_orchestrator_restarts_the_orphan_clock():
    orch = Orchestrator()
    orch.present = False
    clock = OrphanClock(orch.seen, timeout=10)
    clock.expired(False, now=0)
    assert not clock.expired(busy=True, now=9)        # a task is running: not idle
    assert not clock.expired(False, now=15)
    assert not clock.expired(False, now=24)
    orch.present = True
    assert not clock.expired(False, now=26)           # the orchestrator is back
    orch.present = False
    assert not clock.expired(False, now=30)
    assert clock.expired(False, now=40)


def test_idle_timeout_zero_never_leaves():
    clock = OrphanClock(lambda: False, timeout=0)
    assert not any(clock.expired(False, now=t) for t in range(0, 10**6, 1000))


def test_a_worker_says_when_it_has_connected():
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    beat = AliveBeat(client=None, info={"queue": "q", "block": "0", "slots": 1})
    RunningNotes(write_end).note(READY_NOTE)
    RunningNotes(write_end).note(b"+", "t1")
    beat.read("w", read_end)
    assert beat.ready == {"w"} and beat.busy(["w"]) and not beat.busy(["other"])
    os.close(read_end)
    os.close(write_end)
