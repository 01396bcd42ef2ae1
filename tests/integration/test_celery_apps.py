"""Behaviour only the Celery executor has: worker processes, remote tracebacks, walltime that
kills a call stuck in C, serialization errors, packing short calls into shared messages.
(What every executor does is in test_executor_conformance.py.)"""

import linecache
import os
import threading
import time

import pytest

from celeriac import bash_app, python_app
from celeriac.errors import AppTimeout, RemoteTraceback, SerializationError

pytestmark = pytest.mark.integration


class CustomError(Exception):
    """A user's own exception class: must come back as itself."""


@python_app
def double(x):
    return 2 * x


@python_app
def fail(msg):
    raise CustomError(msg)


@python_app
def where():
    from celery import current_task
    return {"pid": os.getpid(), "worker": current_task.request.hostname}


@python_app
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@python_app
def give_lock():
    return threading.Lock()


@python_app
def take(obj):
    return type(obj).__name__


def test_remote_traceback_is_the_cause(dfk):
    with pytest.raises(CustomError, match="boom") as info:
        fail("boom").result(timeout=60)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    # The worker's frames name this file, the function and the line, and show its source.
    line = fail.func.__code__.co_firstlineno + 2
    assert f'File "{__file__}", line {line}, in fail\n    raise CustomError(msg)' in str(cause)
    assert "<dynamic-code>" not in str(cause)


def test_a_notebook_cells_app_fails_with_the_cells_name_line_and_source(dfk, monkeypatch):
    # As IPython/Jupyter do: a cell is compiled under a name of its own and its source is put
    # in the orchestrator's linecache only; no worker has a file of that name.
    cell, source = "<ipython-input-4-cafe>", (
        "from celeriac import python_app\n"
        "\n"
        "@python_app\n"
        "def ratio(a, b):\n"
        "    return a / b\n")
    monkeypatch.setitem(linecache.cache, cell, (len(source), None, source.splitlines(True), cell))
    namespace = {"__name__": "__main__"}
    exec(compile(source, cell, "exec"), namespace)
    with pytest.raises(ZeroDivisionError) as info:
        namespace["ratio"](1, 0).result(timeout=60)
    assert f'File "{cell}", line 5, in ratio\n    return a / b' in str(info.value.__cause__)


def test_task_runs_on_a_celery_worker_process_named_for_the_executor(dfk):
    info = where().result(timeout=60)
    assert info["pid"] != os.getpid()
    assert info["worker"].startswith("celeriac-celery-")


def test_python_walltime_kills_a_call_blocked_in_c(dfk):
    start = time.monotonic()
    with pytest.raises(AppTimeout):
        sleep_then(60, "late", walltime=1).result(timeout=60)
    assert time.monotonic() - start < 15
    # The worker that ran it is still serving.
    assert double(21).result(timeout=60) == 42


def test_unpicklable_argument_fails_the_future_with_serialization_error(dfk):
    fut = take(threading.Lock())
    with pytest.raises(SerializationError, match="could not serialize the arguments of take"):
        fut.result(timeout=60)


@pytest.mark.parametrize("wrap", [lambda f: [f], lambda f: (1, f), lambda f: {"k": [f]}],
                         ids=["list", "tuple", "dict"])
def test_a_future_nested_in_a_container_fails_with_an_error_naming_dependency_resolver(
        dfk, wrap):
    fut = take(wrap(double(1)))
    with pytest.raises(SerializationError) as info:
        fut.result(timeout=60)
    text = str(info.value)
    assert "argument 0 holds a Future" in text and "dependency_resolver" in text
    assert "RLock" not in text


def test_unpicklable_result_fails_with_serialization_error(dfk):
    with pytest.raises(SerializationError, match="result"):
        give_lock().result(timeout=60)


@python_app
def fail_on_tens(i):
    if i % 10 == 0:
        raise CustomError(f"call {i}")
    return i


def test_short_calls_in_a_burst_are_packed_and_each_keeps_its_own_outcome(dfk):
    assert fail_on_tens(1).result(timeout=60) == 1  # measures the app's run time
    link = dfk.executors["celery"]._link
    before = dict(link.stats)
    futures = [fail_on_tens(i) for i in range(1, 401)]
    for i, fut in enumerate(futures, start=1):
        if i % 10 == 0:
            with pytest.raises(CustomError, match=f"call {i}$") as info:
                fut.result(timeout=60)
            assert isinstance(info.value.__cause__, RemoteTraceback)
        else:
            assert fut.result(timeout=60) == i
    calls = link.stats["calls"] - before["calls"]
    messages = link.stats["messages"] - before["messages"]
    assert calls == 400
    assert messages < calls / 4, link.stats
    assert not link._batches  # packed messages are forgotten once their calls come back


@python_app
def where_is(i):
    from celery import current_task
    return i, current_task.request.hostname


def test_the_first_burst_of_an_app_never_run_before_is_packed_and_spread(dfk):
    link = dfk.executors["celery"]._link
    before = dict(link.stats)
    futures = [where_is(i) for i in range(2000)]
    outcomes = [fut.result(timeout=120) for fut in futures]
    assert [i for i, _worker in outcomes] == list(range(2000))
    calls = link.stats["calls"] - before["calls"]
    messages = link.stats["messages"] - before["messages"]
    assert calls == 2000
    assert messages < calls / 4, link.stats  # a few probes, then packed
    assert len({worker for _i, worker in outcomes}) == 2  # both workers got their share



@bash_app
def show_running_fd_env(stdout=None):
    return "echo ${CELERIAC_RUNNING_FD:-unset}"


def test_processes_started_by_apps_do_not_inherit_the_supervisor_pipe(dfk, tmp_path):
    out = str(tmp_path / "env.out")
    assert show_running_fd_env(stdout=out).result(timeout=60) == 0
    with open(out) as fh:
        assert fh.read().strip() == "unset"
