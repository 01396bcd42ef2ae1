"""Retries: Parsl's retry budget and retry_handler, and relaunching after a lost worker."""

import itertools
import time

import pytest
import tenacity

from celeriac import Config, python_app
from celeriac.errors import ConfigurationError, DependencyError, WorkerLost
from celeriac.orchestrator.states import States


def flaky(failures: int):
    """An app that fails ``failures`` times, then returns how many tries it took."""
    tries = itertools.count(1)

    @python_app
    def sometimes():
        n = next(tries)
        if n <= failures:
            raise ValueError(f"try {n} failed")
        return n

    return sometimes


@python_app
def double(x):
    return 2 * x


def test_failing_twice_then_succeeding_succeeds_with_two_retries(load_dfk):
    load_dfk(retries=2)
    fut = flaky(2)()
    assert fut.result(timeout=5) == 3
    assert fut.task_record.fail_count == 2


def test_always_failing_raises_the_last_exception_after_all_tries(load_dfk):
    load_dfk(retries=2)
    fut = flaky(10)()
    with pytest.raises(ValueError, match="try 3 failed"):
        fut.result(timeout=5)
    assert fut.task_record.fail_count == 3
    assert len(fut.task_record.fail_history) == 3
    assert fut.task_record.status is States.failed


def test_without_retries_the_first_failure_is_final(dfk):
    with pytest.raises(ValueError, match="try 1 failed"):
        flaky(1)().result(timeout=5)


def test_retried_task_feeds_its_final_result_to_dependents(load_dfk):
    load_dfk(retries=1)
    assert double(flaky(1)()).result(timeout=5) == 4


def test_retry_handler_cost_spends_the_budget_faster(load_dfk):
    seen = []

    def handler(exc, record):
        seen.append((str(exc), record["fail_count"]))
        return 2

    load_dfk(retries=3, retry_handler=handler)
    with pytest.raises(ValueError, match="try 2 failed"):
        flaky(10)().result(timeout=5)
    # costs 2 then 4: the second failure exceeds a budget of 3
    assert seen == [("try 1 failed", 1), ("try 2 failed", 2)]


def test_retry_handler_cost_zero_retries_until_success(load_dfk):
    load_dfk(retries=0, retry_handler=lambda exc, record: 0)
    assert flaky(4)().result(timeout=5) == 5


def test_retry_handler_can_refuse_retries_by_exception_type(load_dfk):
    def handler(exc, record):
        return 100 if isinstance(exc, KeyError) else 1

    load_dfk(retries=5, retry_handler=handler)

    @python_app
    def missing():
        raise KeyError("not worth retrying")

    fut = missing()
    with pytest.raises(KeyError):
        fut.result(timeout=5)
    assert fut.task_record.fail_count == 1


def test_retry_handler_that_raises_fails_the_task_with_its_exception(load_dfk):
    def handler(exc, record):
        raise RuntimeError("handler broke")

    load_dfk(retries=5, retry_handler=handler)
    with pytest.raises(RuntimeError, match="handler broke"):
        flaky(10)().result(timeout=5)


def test_retry_resends_the_same_resolved_arguments_as_a_new_try(load_dfk, manual):
    load_dfk(manual, retries=1)
    upstream = double(5)
    manual.wait_for(1)[0].run()
    fut = double(upstream)
    first = manual.wait_for(2)[1]
    first.fail(OSError("disk hiccup"))
    second = manual.wait_for(3)[2]
    assert second.call.args == first.call.args == (10,)
    assert second.call.tid == first.call.tid == fut.tid
    assert second.call.task_id != first.call.task_id  # each try is its own Celery task
    second.run()
    assert fut.result(timeout=5) == 20


def test_lost_worker_relaunches_without_spending_retries(load_dfk, manual):
    load_dfk(manual, retries=0, worker_lost_retries=2)
    fut = double(4)
    manual.wait_for(1)[0].fail(WorkerLost("worker 1 died"))
    manual.wait_for(2)[1].fail(WorkerLost("worker 2 died"))
    manual.wait_for(3)[2].run()
    assert fut.result(timeout=5) == 8
    assert fut.task_record.lost_count == 2
    assert fut.task_record.fail_count == 0


def test_lost_worker_beyond_the_limit_fails_with_worker_lost(load_dfk, manual):
    load_dfk(manual, retries=0, worker_lost_retries=2)
    fut = double(4)
    for n in range(3):
        manual.wait_for(n + 1)[n].fail(WorkerLost(f"worker {n} died"))
    with pytest.raises(WorkerLost, match="worker 2 died"):
        fut.result(timeout=5)
    assert len(manual.submissions) == 3


def test_lost_workers_and_app_failures_have_separate_budgets(load_dfk, manual):
    load_dfk(manual, retries=1, worker_lost_retries=2)
    fut = double(1)
    manual.wait_for(1)[0].fail(WorkerLost("lost"))
    manual.wait_for(2)[1].fail(ValueError("app failed once"))
    manual.wait_for(3)[2].fail(WorkerLost("lost again"))
    manual.wait_for(4)[3].run()
    assert fut.result(timeout=5) == 2
    assert (fut.task_record.lost_count, fut.task_record.fail_count) == (2, 1)


def test_lost_worker_relaunch_happens_with_zero_retries_configured(load_dfk, manual):
    load_dfk(manual)  # retries=0 by default; worker_lost_retries=3 by default
    fut = double(2)
    manual.wait_for(1)[0].fail(WorkerLost("lost"))
    manual.wait_for(2)[1].run()
    assert fut.result(timeout=5) == 4


# ---------------------------------------------------------------- tenacity policies

def test_final_error_says_how_many_tries_and_is_the_last_exception(load_dfk):
    load_dfk(retries=2)
    fut = flaky(10)()
    with pytest.raises(ValueError, match="try 3 failed") as info:
        fut.result(timeout=5)
    assert any("failed after 3 tries" in note for note in info.value.__notes__)


def test_a_single_try_adds_no_note(dfk):
    with pytest.raises(ValueError) as info:
        flaky(1)().result(timeout=5)
    assert not getattr(info.value, "__notes__", None)


def test_policy_retries_only_the_exception_types_it_names(load_dfk):
    load_dfk(retries=0, retry_policy=tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(OSError), stop=tenacity.stop_after_attempt(5)))

    @python_app
    def io_then_ok(counter=itertools.count(1)):
        n = next(counter)
        if n < 3:
            raise OSError(f"disk busy {n}")
        return n

    @python_app
    def bad_value():
        raise ValueError("not retried")

    assert io_then_ok().result(timeout=5) == 3
    fut = bad_value()
    with pytest.raises(ValueError):
        fut.result(timeout=5)
    assert fut.task_record.try_id == 1


def test_policy_stop_after_attempt_bounds_the_tries(load_dfk):
    load_dfk(retry_policy=dict(stop=tenacity.stop_after_attempt(4)))
    fut = flaky(10)()
    with pytest.raises(ValueError, match="try 4 failed"):
        fut.result(timeout=5)
    assert fut.task_record.try_id == 4


def test_policy_wait_delays_the_retry_without_blocking_other_tasks(load_dfk, manual):
    load_dfk(manual, retry_policy=tenacity.Retrying(
        wait=tenacity.wait_fixed(1.0), stop=tenacity.stop_after_attempt(2)))
    slow = double(1)
    manual.wait_for(1)[0].fail(OSError("flaky mount"))
    failed_at = time.monotonic()
    other = double(5)  # submitted during the backoff: goes out at once
    manual.wait_for(2)[1].run()
    assert other.result(timeout=5) == 10
    assert time.monotonic() - failed_at < 0.5
    retry = manual.wait_for(3, timeout=5)[2]
    assert time.monotonic() - failed_at >= 0.95
    retry.run()
    assert slow.result(timeout=5) == 2


def test_app_policy_takes_precedence_over_the_config_policy(load_dfk):
    load_dfk(retry_policy=dict(stop=tenacity.stop_after_attempt(1)))
    tries = itertools.count(1)

    @python_app(retry_policy=dict(stop=tenacity.stop_after_attempt(3)))
    def twice_bad():
        n = next(tries)
        if n < 3:
            raise OSError(n)
        return n

    assert twice_bad().result(timeout=5) == 3


def test_policy_stop_after_delay_counts_from_the_first_try(load_dfk, manual):
    load_dfk(manual, retry_policy=tenacity.Retrying(
        wait=tenacity.wait_fixed(0.3), stop=tenacity.stop_after_delay(0.5)))
    fut = double(1)
    for n in range(10):
        subs = manual.wait_for(n + 1, timeout=5)
        subs[n].fail(OSError(f"try {n + 1}"))
        if fut.done():
            break
    with pytest.raises(OSError):
        fut.result(timeout=5)
    assert 2 <= fut.task_record.try_id <= 3


@pytest.mark.parametrize("policy", ["retry twice", 3, tenacity.stop_after_attempt(2),
                                    {"retries": 3}])
def test_a_policy_that_is_not_tenacity_is_refused_clearly(policy):
    with pytest.raises(ConfigurationError, match="retry_policy"):
        Config(retry_policy=policy)
    with pytest.raises(ConfigurationError, match="retry_policy"):
        python_app(lambda: 1, retry_policy=policy)


def test_lost_worker_costs_at_most_one_retry_even_if_the_handler_says_more(load_dfk, manual):
    load_dfk(manual, retries=2, worker_lost_retries=0, retry_handler=lambda exc, rec: 5)
    fut = double(3)
    manual.wait_for(1)[0].fail(WorkerLost("worker w1 died"))
    manual.wait_for(2)[1].fail(WorkerLost("worker w2 died"))
    manual.wait_for(3)[2].run()
    assert fut.result(timeout=5) == 6


def test_lost_worker_relaunch_is_logged_with_the_worker(load_dfk, manual, caplog):
    load_dfk(manual)
    fut = double(3)
    with caplog.at_level("WARNING", logger="celeriac"):
        manual.wait_for(1)[0].fail(WorkerLost("its worker celeriac-x-1@node7 died"))
        manual.wait_for(2)[1].run()
    assert fut.result(timeout=5) == 6
    assert "celeriac-x-1@node7" in caplog.text and "relaunching" in caplog.text


def test_dependency_failures_are_never_retried(load_dfk, manual):
    load_dfk(manual, retries=3)
    up = double(1)
    down = double(up)
    manual.wait_for(1)[0].fail(ValueError("upstream broke"))
    for n in range(2, 5):
        manual.wait_for(n)[n - 1].fail(ValueError("upstream broke"))
    with pytest.raises(DependencyError):
        down.result(timeout=5)
    assert all(s.call.tid == up.tid for s in manual.submissions)


def test_stop_before_delay_sees_the_upcoming_wait_as_tenacity_does(load_dfk, manual):
    load_dfk(manual, retry_policy=tenacity.Retrying(
        wait=tenacity.wait_fixed(10), stop=tenacity.stop_before_delay(5)))
    fut = double(1)
    manual.wait_for(1)[0].fail(OSError("once"))
    with pytest.raises(OSError):  # a 10 s wait would pass the 5 s deadline: no retry
        fut.result(timeout=5)
    assert fut.task_record.try_id == 1
