"""Implicit dataflow: futures passed to apps are dependencies, and failures propagate."""

import threading
from concurrent.futures import Future

import pytest

from celeriac import python_app
from celeriac.errors import DependencyError
from celeriac.orchestrator.states import States

ran = []  # names of apps whose bodies actually ran


@pytest.fixture(autouse=True)
def _reset_ran():
    ran.clear()


@python_app
def double(x):
    ran.append("double")
    return 2 * x


@python_app
def add(x, y=0):
    ran.append("add")
    return x + y


@python_app
def total(inputs=()):
    ran.append("total")
    return sum(inputs)


@python_app
def explode(message="boom"):
    ran.append("explode")
    raise ValueError(message)


def test_future_in_args_is_replaced_by_its_result(dfk):
    assert double(double(3)).result(timeout=5) == 12


def test_future_in_kwargs_is_replaced_by_its_result(dfk):
    assert add(1, y=double(2)).result(timeout=5) == 5


def test_futures_in_inputs_are_replaced_by_their_results(dfk):
    assert total(inputs=[double(1), double(2), 3]).result(timeout=5) == 9


def test_plain_concurrent_future_is_a_dependency(manual_dfk, manual):
    upstream = Future()
    fut = double(upstream)
    assert manual.submissions == []  # not launched while the plain future is pending
    upstream.set_result(5)
    [sub] = manual.wait_for(1)
    assert sub.call.args == (5,)
    sub.run()
    assert fut.result(timeout=5) == 10


def test_dependent_is_launched_only_after_its_dependency_finishes(manual_dfk, manual):
    first = double(1)
    second = add(first, y=first)
    assert [s.call.name for s in manual.wait_for(1)] == ["double"]
    assert second.task_record.status is States.pending
    manual.submissions[0].run()
    subs = manual.wait_for(2)
    assert subs[1].call.name == "add"
    assert subs[1].call.args == (2,) and subs[1].call.kwargs["y"] == 2
    subs[1].run()
    assert second.result(timeout=5) == 4


def test_independent_calls_run_concurrently(dfk):
    barrier = threading.Barrier(2, timeout=5)

    @python_app
    def meet():
        barrier.wait()  # only returns if both calls are running at the same time
        return True

    assert [f.result(timeout=10) for f in (meet(), meet())] == [True, True]


def test_failed_dependency_gives_dependency_error_naming_upstream_tid(dfk):
    bad = explode()
    dependent = double(bad)
    with pytest.raises(DependencyError) as info:
        dependent.result(timeout=5)
    err = info.value
    assert [d for _, d in err.dependent_exceptions_tids] == [f"task {bad.tid}"]
    assert err.task_id == dependent.tid
    assert str(err) == (f"Dependency failure for task {dependent.tid} with failed "
                        f"dependencies from task {bad.tid}")
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "boom"


def test_dependent_of_failed_dependency_never_runs(dfk):
    dependent = double(explode())
    with pytest.raises(DependencyError):
        dependent.result(timeout=5)
    assert ran == ["explode"]
    assert dependent.task_record.status is States.dep_fail


def test_dependency_error_two_levels_down_names_direct_upstream_and_root_cause(dfk):
    bad = explode("root failure")
    middle = double(bad)
    bottom = add(middle, y=1)
    with pytest.raises(DependencyError) as info:
        bottom.result(timeout=5)
    err = info.value
    assert [d for _, d in err.dependent_exceptions_tids] == [f"task {middle.tid}"]
    assert isinstance(err.dependent_exceptions_tids[0][0], DependencyError)
    assert isinstance(err.__cause__, ValueError)
    assert str(err.__cause__) == "root failure"
    assert ran == ["explode"]


def test_dependency_error_names_only_the_failed_inputs(dfk):
    good = double(1)
    bad1 = explode("one")
    bad2 = explode("two")
    fut = total(inputs=[good, bad1, bad2])
    with pytest.raises(DependencyError) as info:
        fut.result(timeout=5)
    failed = info.value.dependent_exceptions_tids
    assert sorted(d for _, d in failed) == sorted([f"task {bad1.tid}", f"task {bad2.tid}"])
    assert {str(exc) for exc, _ in failed} == {"one", "two"}
    assert "total" not in ran


def test_failed_plain_future_is_described_by_its_repr(dfk):
    upstream = Future()
    upstream.set_exception(KeyError("gone"))
    with pytest.raises(DependencyError) as info:
        double(upstream).result(timeout=5)
    assert info.value.dependent_exceptions_tids[0][1] == repr(upstream)
    assert repr(upstream) in str(info.value) and "raised KeyError" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)
    assert ran == []


def test_already_finished_dependency_launches_at_once(dfk):
    first = double(4)
    assert first.result(timeout=5) == 8
    assert double(first).result(timeout=5) == 16


def test_same_future_used_twice_is_resolved_in_both_places(dfk):
    x = double(3)
    assert add(x, y=x).result(timeout=5) == 12


def test_non_future_arguments_pass_through_unchanged(dfk):
    @python_app
    def echo(*args, **kwargs):
        return args, kwargs

    marker = object()
    args, kwargs = echo(1, [2, 3], marker, key={"a": 1}).result(timeout=5)
    assert args == (1, [2, 3], marker)
    assert kwargs == {"key": {"a": 1}}


def test_cancelled_plain_future_fails_the_dependent_instead_of_hanging(dfk):
    upstream = Future()
    dependent = double(upstream)
    assert upstream.cancel()
    with pytest.raises(DependencyError) as info:
        dependent.result(timeout=5)
    assert info.value.dependent_exceptions_tids[0][1] == repr(upstream)
    assert ran == []


def test_executor_refusing_a_task_fails_that_task(load_dfk, manual):
    from celeriac.errors import SubmitException

    def refuse(func, call, spec):
        raise SubmitException("broker unreachable")

    manual.submit = refuse
    load_dfk(manual)
    fut = double(1)
    with pytest.raises(SubmitException, match="broker unreachable"):
        fut.result(timeout=5)
    assert fut.task_record.status is States.failed


def test_task_whose_executor_cancels_it_ends_cancelled_instead_of_hanging(manual_dfk, manual):
    from concurrent.futures import CancelledError

    fut = double(1)
    dependent = double(fut)
    assert manual.wait_for(1)[0].future.cancel()  # as a revoke from Flower does
    with pytest.raises(CancelledError):
        fut.result(timeout=5)
    with pytest.raises(DependencyError):
        dependent.result(timeout=5)


def test_long_chain_of_dependencies_resolves(dfk):
    fut = double(0.5)
    for _ in range(200):
        fut = add(fut, y=1)
    assert fut.result(timeout=10) == 201


def test_wide_fan_in_waits_for_every_input(dfk):
    parts = [double(i) for i in range(300)]
    assert total(inputs=parts).result(timeout=10) == sum(2 * i for i in range(300))
