"""While a run is loaded, the cycle collector walks the young objects (among them every task
in flight) less often; the process's thresholds come back when the run ends, and thresholds
the user set are never touched."""

import gc

import pytest

from celeriac import Config, DataFlowKernel, python_app
from celeriac.executors import ThreadPoolExecutor
from celeriac.orchestrator import collector


@python_app
def double(x):
    return 2 * x


@pytest.fixture
def default_thresholds():
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's default up to 3.12
    yield
    gc.set_threshold(*saved)


def test_a_loaded_run_collects_young_objects_less_often_then_gives_the_pace_back(
        default_thresholds, load_dfk):
    dfk = load_dfk()
    assert gc.get_threshold() == (collector.YOUNG, 10, 10)
    assert double(2).result(timeout=10) == 4
    dfk.cleanup()
    assert gc.get_threshold() == (700, 10, 10)


def test_the_pace_comes_back_only_when_the_last_of_two_runs_ends(default_thresholds, load_dfk,
                                                                 tmp_path):
    first = load_dfk()
    second = DataFlowKernel(Config([ThreadPoolExecutor(label="t")], run_dir=str(tmp_path)))
    first.cleanup()
    assert gc.get_threshold() == (collector.YOUNG, 10, 10)
    second.cleanup()
    assert gc.get_threshold() == (700, 10, 10)


def test_thresholds_the_user_set_are_left_alone(default_thresholds, load_dfk):
    gc.set_threshold(5000, 20, 20)
    dfk = load_dfk()
    assert gc.get_threshold() == (5000, 20, 20)
    dfk.cleanup()
    assert gc.get_threshold() == (5000, 20, 20)


@pytest.fixture
def young_collections():
    """How many young collections (generation 0 only) happen from now on."""
    seen = []

    def count(phase, info):
        if phase == "start" and info["generation"] == 0:
            seen.append(1)

    gc.callbacks.append(count)
    yield seen
    gc.callbacks.remove(count)


def test_tasks_going_in_flight_are_walked_by_few_young_collections(
        default_thresholds, manual_dfk, manual, young_collections):
    """Each young collection walks every task in flight that it finds young: 5,000 tasks
    submitted at once (about 150,000 new objects with this test's executor) are walked by
    a handful of collections, not by one every few hundred tasks."""
    gc.collect()
    young_collections.clear()
    futures = [double(i) for i in range(5000)]
    manual.wait_for(5000)
    walks = len(young_collections)
    for submission in manual.submissions:
        submission.succeed(0)
    assert all(f.result(timeout=10) == 0 for f in futures)
    assert walks <= 4, f"{walks} young collections while 5,000 tasks went in flight"
