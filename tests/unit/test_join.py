"""join_app: an app that launches apps, whose result is the result of what it launched."""

import threading
import time

import pytest

from celeriac import join_app, python_app
from celeriac.errors import JoinError
from celeriac.orchestrator.states import States


@python_app
def double(x):
    return 2 * x


@python_app
def explode(message):
    raise ValueError(message)


@join_app
def fan_out(n):
    return [double(i) for i in range(n)]


@join_app
def one(x):
    return double(x)


def test_join_app_returning_a_future_resolves_to_its_result(dfk):
    assert one(5).result(timeout=5) == 10


def test_join_app_returning_a_list_resolves_to_the_list_of_results(dfk):
    assert fan_out(4).result(timeout=5) == [0, 2, 4, 6]


def test_join_app_returning_an_empty_list_resolves_to_an_empty_list(dfk):
    assert fan_out(0).result(timeout=5) == []


def test_join_app_returning_a_non_future_is_a_type_error_naming_the_app(dfk):
    @join_app
    def not_a_future():
        return 42

    with pytest.raises(TypeError) as info:
        not_a_future().result(timeout=5)
    assert "not_a_future" in str(info.value) and "int" in str(info.value)


def test_join_app_returning_a_list_with_a_non_future_is_a_type_error(dfk):
    @join_app
    def mixed():
        return [double(1), 3]

    with pytest.raises(TypeError, match="mixed"):
        mixed().result(timeout=5)


def test_failing_inner_future_gives_join_error_with_its_tid_and_cause(dfk):
    inner = []

    @join_app
    def wraps_failure():
        inner.append(explode("inner broke"))
        inner.append(double(1))
        return inner

    fut = wraps_failure()
    with pytest.raises(JoinError) as info:
        fut.result(timeout=5)
    err = info.value
    assert [d for _, d in err.dependent_exceptions_tids] == [f"task {inner[0].tid}"]
    assert err.task_id == fut.tid
    assert str(err) == (f"Join failure for task {fut.tid} with failed join dependencies from "
                        f"task {inner[0].tid}")
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "inner broke"


def test_join_app_body_raising_fails_with_that_exception(dfk):
    @join_app
    def broken():
        raise RuntimeError("body failed")

    with pytest.raises(RuntimeError, match="body failed"):
        broken().result(timeout=5)


def test_join_app_arguments_may_be_futures(dfk):
    assert one(double(3)).result(timeout=5) == 12


def test_join_app_result_is_a_dependency_for_other_apps(dfk):
    assert double(fan_out(3)[2]).result(timeout=5) == 8


def test_join_app_body_runs_in_process_and_takes_no_executor_slot(manual_dfk, manual):
    thread_names = []

    @join_app
    def launcher():
        thread_names.append(threading.current_thread().name)
        return double(21)

    fut = launcher()
    [sub] = manual.wait_for(1)  # only the inner app reached the executor
    assert sub.call.name == "double"
    assert thread_names and not thread_names[0].startswith("celeriac-manual")
    assert not fut.done()  # waits for the inner future
    sub.run()
    assert fut.result(timeout=5) == 42


def test_nested_join_apps(dfk):
    @join_app
    def outer():
        return [one(1), fan_out(2)]

    assert outer().result(timeout=5) == [2, [0, 2]]


def test_join_app_returning_a_future_that_is_cancelled_fails_with_join_error(dfk):
    from concurrent.futures import Future
    inner = Future()

    @join_app
    def returns_plain_future():
        return inner

    fut = returns_plain_future()
    deadline = time.monotonic() + 5
    while fut.task_record.status is not States.joining:  # until the body has returned `inner`
        assert time.monotonic() < deadline, fut.task_record.status
        time.sleep(0.01)
    inner.cancel()
    with pytest.raises(JoinError):
        fut.result(timeout=5)
