"""Block scaling decisions, fed plain numbers (no broker, no provider)."""

import itertools

import pytest

from celeriac.orchestrator.strategy import (
    NOTHING,
    BlockRecord,
    BlockView,
    Decision,
    Limits,
    Load,
    capacity,
    decide,
    judge_block,
)
from celeriac.providers.base import JobState

RUN, PEND = JobState.RUNNING, JobState.PENDING


def blocks(*specs):
    """BlockViews from (state, slots, submitted) tuples, numbered from 0."""
    return tuple(BlockView(str(i), s, slots, t) for i, (s, slots, t) in enumerate(specs))


LIMITS = Limits(init_blocks=0, min_blocks=0, max_blocks=4, nodes_per_block=1, parallelism=1)


# ----------------------------------------------------------------- scaling out

def test_tasks_and_no_blocks_start_enough_blocks_for_them():
    d = decide("simple", Load(outstanding=5, slots_per_node=2), LIMITS, 60)
    assert d.scale_out == 3 and d.scale_in == ()


def test_scale_out_never_goes_above_max_blocks():
    d = decide("simple", Load(outstanding=1000, blocks=blocks((RUN, 2, 0)), slots_per_node=2),
               LIMITS, 60)
    assert d.scale_out == 3
    full = blocks(*[(RUN, 2, 0)] * 4)
    assert decide("simple", Load(outstanding=1000, blocks=full, slots_per_node=2),
                  LIMITS, 60) == NOTHING


def test_a_pending_block_counts_as_capacity_so_it_is_not_submitted_again():
    """Parsl #704: while the scheduler queues the job, do not ask for another one."""
    load = Load(outstanding=2, blocks=blocks((PEND, 0, 0)), slots_per_node=2, now=500)
    assert decide("simple", load, LIMITS, 60) == NOTHING


def test_a_started_block_without_workers_yet_counts_its_expected_slots():
    load = Load(outstanding=4, blocks=blocks((RUN, 0, 0)), slots_per_node=2)
    assert capacity(load, LIMITS) == 2
    assert decide("simple", load, LIMITS, 60).scale_out == 1


def test_connected_workers_count_their_real_slots_not_the_estimate():
    load = Load(outstanding=8, blocks=blocks((RUN, 8, 0)), slots_per_node=1)
    assert decide("simple", load, LIMITS, 60) == NOTHING


def test_workers_started_by_hand_on_the_queue_count_as_capacity():
    assert decide("simple", Load(outstanding=4, other_slots=4), LIMITS, 60) == NOTHING
    assert decide("simple", Load(outstanding=5, other_slots=4), LIMITS, 60).scale_out == 1


def test_nodes_per_block_multiplies_the_slots_of_a_block():
    limits = Limits(0, 0, 10, nodes_per_block=3, parallelism=1)
    assert decide("simple", Load(outstanding=7, slots_per_node=2), limits, 60).scale_out == 2


@pytest.mark.parametrize("parallelism, expected", [(1, 10), (0.5, 5), (0.1, 1), (0, 1)])
def test_parallelism_is_the_ratio_of_slots_to_tasks(parallelism, expected):
    limits = Limits(0, 0, 100, 1, parallelism)
    assert decide("simple", Load(outstanding=10), limits, 60).scale_out == expected


def test_parallelism_0_starts_one_block_for_waiting_tasks_and_no_more():
    # Parsl's documented meaning (its issue #97): as few resources as possible, not none.
    limits = Limits(0, 0, 100, 1, parallelism=0)
    assert decide("simple", Load(outstanding=500), limits, 60).scale_out == 1
    one_block = (BlockView("0", JobState.PENDING, 0, 0.0),)
    assert not decide("simple", Load(outstanding=500, blocks=one_block), limits, 60)
    assert not decide("simple", Load(outstanding=0), limits, 60)


def test_below_min_blocks_scales_up_to_min_blocks_even_without_tasks():
    limits = Limits(init_blocks=0, min_blocks=2, max_blocks=4)
    assert decide("simple", Load(outstanding=0), limits, 60).scale_out == 2
    assert decide("simple", Load(outstanding=0, blocks=blocks((RUN, 1, 0))),
                  limits, 60).scale_out == 1


def test_min_blocks_above_max_blocks_stops_at_max_blocks():
    limits = Limits(init_blocks=0, min_blocks=5, max_blocks=2)
    assert decide("simple", Load(outstanding=0), limits, 60).scale_out == 2


# ----------------------------------------------------------------- scaling in

def test_idle_blocks_are_cancelled_after_max_idletime_down_to_min_blocks():
    limits = Limits(0, 1, 4)
    three = blocks((RUN, 2, 0), (RUN, 2, 10), (RUN, 2, 20))
    assert decide("simple", Load(0, three, idle_since=100, now=159), limits, 60) == NOTHING
    d = decide("simple", Load(0, three, idle_since=100, now=160), limits, 60)
    assert d.scale_out == 0 and sorted(d.scale_in) == ["0", "1"]


def test_no_scale_in_while_any_task_is_outstanding():
    load = Load(outstanding=1, blocks=blocks((RUN, 2, 0), (RUN, 2, 0)), idle_since=0,
                now=10_000)
    assert decide("simple", load, LIMITS, 60) == NOTHING


def test_a_block_is_idle_only_from_its_submission_on():
    """Parsl #3696: a block that has not connected yet is not 'infinitely idle'."""
    load = Load(0, blocks((PEND, 0, 950), (RUN, 2, 0)), idle_since=0, now=1000)
    assert decide("simple", load, LIMITS, 60).scale_in == ("1",)


def test_blocks_not_serving_yet_are_cancelled_before_serving_ones():
    limits = Limits(0, 1, 4)
    load = Load(0, blocks((RUN, 2, 0), (PEND, 0, 5), (RUN, 0, 3)), idle_since=0, now=1000)
    assert decide("simple", load, limits, 60).scale_in == ("1", "2")


def test_max_idletime_zero_scales_in_at_once_when_idle():
    load = Load(0, blocks((RUN, 2, 0)), idle_since=50, now=50)
    assert decide("simple", load, LIMITS, 0).scale_in == ("0",)


# ----------------------------------------------------------------- no thrashing

def test_a_block_started_for_tasks_is_never_cancelled_while_they_wait():
    """Play rounds of the loop: tasks arrive, a block is submitted and waits in the queue.
    No round may cancel it while the tasks are outstanding, and it is submitted once."""
    submitted, bl = [], ()
    for now in range(0, 3000, 5):
        d = decide("simple", Load(outstanding=3, blocks=bl, slots_per_node=4,
                                  idle_since=0, now=now), LIMITS, 60)
        assert d.scale_in == ()
        if d.scale_out:
            submitted.append(now)
            bl = bl + tuple(BlockView(str(len(bl)), PEND, 0, now) for _ in range(d.scale_out))
    assert submitted == [0] and len(bl) == 1


@pytest.mark.parametrize("outstanding, slots, pend, idle_for", list(itertools.product(
    [0, 1, 3, 50], [0, 2], [0, 1, 2], [0, 30, 61, 10_000])))
def test_one_decision_never_both_scales_out_and_in(outstanding, slots, pend, idle_for):
    load = Load(outstanding, blocks((RUN, slots, 0), *[(PEND, 0, 0)] * pend),
                slots_per_node=2, idle_since=0, now=idle_for)
    d = decide("simple", load, Limits(0, 0, 3), 60)
    assert not (d.scale_out and d.scale_in)
    if d.scale_in:  # and what is scaled in is never scaled out again by the same inputs
        kept = tuple(b for b in load.blocks if b.id not in d.scale_in)
        again = Load(outstanding, kept, slots_per_node=2, idle_since=0, now=idle_for)
        assert decide("simple", again, Limits(0, 0, 3), 60).scale_out == 0
    assert len(load.blocks) + d.scale_out <= 3


# ----------------------------------------------------------------- strategy none

def test_none_keeps_init_blocks_whatever_the_load():
    limits = Limits(init_blocks=2, min_blocks=0, max_blocks=4)
    two = blocks((RUN, 2, 0), (RUN, 2, 0))
    assert decide("none", Load(outstanding=1000, blocks=two), limits, 60) == NOTHING
    assert decide(None, Load(0, two, idle_since=0, now=10_000), limits, 0) == NOTHING
    assert decide("none", Load(5, two[:1]), limits, 60).scale_out == 1  # one ended


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown strategy"):
        decide("htex_auto_scale", Load(0), LIMITS, 60)


def test_decision_is_false_when_it_does_nothing():
    assert not NOTHING and Decision(scale_out=1) and Decision(scale_in=("3",))


# ----------------------------------------------------------------- judging blocks

def record(state, ready=False, running_since=None, cancelled=False):
    r = BlockRecord("0", "job", submitted=0, state=state, running_since=running_since,
                    ready=ready, cancelled=cancelled)
    return r


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.COMPLETED, JobState.MISSING,
                                   JobState.CANCELLED])
def test_a_block_that_ends_before_any_worker_connects_has_failed(state):
    assert judge_block(record(state), now=1, start_timeout=120) == "ended"


def test_endings_that_are_not_start_failures():
    assert judge_block(record(JobState.TIMEOUT), 1, 120) is None  # walltime reached
    assert judge_block(record(JobState.COMPLETED, ready=True), 1, 120) is None
    assert judge_block(record(JobState.FAILED, cancelled=True), 1, 120) is None
    assert judge_block(record(JobState.FAILED, ready=True), 1, 120) is None  # started, then died


def test_a_running_block_whose_workers_never_connect_fails_after_the_start_timeout():
    assert judge_block(record(RUN, running_since=100), now=219, start_timeout=120) is None
    assert judge_block(record(RUN, running_since=100), now=220, start_timeout=120) == \
        "no workers"
    assert judge_block(record(RUN, ready=True, running_since=100), 10_000, 120) is None
    assert judge_block(record(RUN, running_since=100), 10_000, 0) is None  # disabled


def test_a_pending_block_never_times_out_the_scheduler_may_queue_it_for_days():
    assert judge_block(record(PEND), now=10**6, start_timeout=120) is None


@pytest.mark.parametrize("options, message", [
    ({"strategy": "htex_auto_scale"}, "strategy must be one of .*not 'htex_auto_scale'"),
    ({"strategy_period": 0}, "strategy_period must be a finite number of seconds > 0"),
    ({"strategy_period": "5"}, "strategy_period must be a finite number of seconds > 0"),
    ({"max_idletime": -1}, "max_idletime must be a number of seconds >= 0"),
])
def test_impossible_strategy_options_are_refused_by_config(options, message):
    from celeriac import Config
    from celeriac.errors import ConfigurationError
    with pytest.raises(ConfigurationError, match=message):
        Config(**options)


# ----------------------------------------------------------------- expected slots of a block

def SizedProvider(cores_per_node=None, mem_per_node=None):
    """A provider that states its node size (as ClusterProviders may)."""
    from celeriac.providers import LocalProvider
    provider = LocalProvider(init_blocks=0, max_blocks=4)
    provider.cores_per_node = cores_per_node
    provider.mem_per_node = mem_per_node
    return provider


@pytest.mark.parametrize("provider, options, expected", [
    (SizedProvider(), {}, 1),                                         # unknown: one per node
    (SizedProvider(cores_per_node=16), {"cores_per_worker": 4}, 4),
    (SizedProvider(cores_per_node=16), {"max_workers_per_node": 2}, 2),
    (SizedProvider(cores_per_node=16, mem_per_node=8), {"mem_per_worker": 4}, 2),
    (SizedProvider(cores_per_node=16), {"available_accelerators": 3}, 3),
    (SizedProvider(cores_per_node=4), {"pool": "threads", "concurrency": 3}, 12),
])
def test_a_block_not_connected_yet_is_expected_to_bring_what_its_nodes_fit(
        provider, options, expected):
    from celeriac.executors import CeleryExecutor
    assert CeleryExecutor(provider=provider, **options)._slots_per_node() == expected
