"""How many worker processes a `celeriac worker` supervisor runs, from the pool requests its
workers relay and, under --autoscale, from the queue (no processes, no broker)."""

import os

import pytest

from celeriac.errors import ConfigurationError
from celeriac.workers.liveness import AliveBeat, RunningNotes
from celeriac.workers.pool import PoolSize, parse_autoscale


def test_grow_and_shrink_change_the_size_but_never_below_one_process():
    pool = PoolSize(2)
    pool.request("grow 3")
    assert pool.processes == 5
    pool.request("shrink 10")
    assert pool.processes == 1


def test_autoscale_grows_at_once_and_shrinks_only_after_the_keepalive():
    pool = PoolSize(4, autoscale=(3, 1), keepalive=30)
    assert pool.processes == 1                         # starts at MIN
    assert pool.follow(demand=7, now=0) == 3           # never past MAX
    assert pool.follow(demand=0, now=10) == 3
    assert pool.follow(demand=0, now=39) == 3
    assert pool.follow(demand=0, now=40) == 1          # 30 s of wanting less
    assert pool.max_slots(concurrency=2) == 6


def test_a_busy_moment_restarts_the_keepalive():
    pool = PoolSize(1, autoscale=(2, 1), keepalive=30)
    pool.follow(5, now=0)
    pool.follow(0, now=20)
    pool.follow(2, now=29)                             # wanted again
    assert pool.follow(0, now=55) == 2
    assert pool.follow(0, now=85) == 1


def test_flowers_autoscale_sets_the_range_and_grow_under_autoscale_moves_it():
    pool = PoolSize(2)
    pool.request("autoscale 6 3")
    assert (pool.autoscale, pool.processes) == ((6, 3), 3)
    pool.request("grow 5")
    assert (pool.autoscale, pool.processes) == ((8, 3), 8)
    pool.request("shrink 7")
    assert (pool.autoscale, pool.processes) == ((8, 1), 1)


def test_a_pool_with_accelerators_never_runs_more_processes_than_accelerators():
    pool = PoolSize(2, limit=2)
    pool.request("grow 1")
    assert pool.processes == 2


def test_requests_it_does_not_understand_change_nothing(caplog):
    pool = PoolSize(2)
    for text in ("grow", "grow x", "explode 3", "autoscale 1 5"):
        pool.request(text)
    assert pool.processes == 2 and pool.autoscale is None
    assert caplog.text.count("does not understand") == 4


@pytest.mark.parametrize("text, expected", [("8,2", (8, 2)), ("4", (4, 1)), (" 3 , 3 ", (3, 3))])
def test_autoscale_option_is_max_then_min(text, expected):
    assert parse_autoscale(text) == expected


@pytest.mark.parametrize("text", ["2,3", "0", "8,0", "a,b", "1,2,3"])
def test_a_bad_autoscale_option_says_what_it_takes(text):
    with pytest.raises(ConfigurationError, match="MIN"):
        parse_autoscale(text)


def test_a_worker_relays_pool_requests_to_its_supervisor_through_its_pipe():
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    notes, beat = RunningNotes(write_end), AliveBeat(client=None)
    notes.note(b"+", "task-1")
    notes.ask("grow 2")
    beat.read("w", read_end)
    assert beat.requests == ["grow 2"] and beat.running["w"] == {"task-1"}
    os.close(read_end)
    os.close(write_end)
