"""Retries: Parsl's retry budget and retry_handler, and relaunching after a lost worker."""

import itertools

import pytest

from celeriac import python_app
from celeriac.errors import WorkerLost
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
