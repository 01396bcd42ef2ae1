"""Apps running as real Celery tasks on real workers, with the embedded Redis."""

import os
import threading
import time

import pytest

import celeriac
from celeriac import AUTO_LOGNAME, File, bash_app, join_app, python_app
from celeriac.errors import (AppTimeout, BashAppNoReturn, BashExitFailure, DependencyError,
                             JoinError, RemoteTraceback, SerializationError)

pytestmark = pytest.mark.integration


class CustomError(Exception):
    """A user's own exception class: must come back as itself."""


@python_app
def double(x):
    return 2 * x


@python_app
def add(*args, inputs=()):
    return sum(args) + sum(inputs)


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


@bash_app
def echo(msg, stdout=AUTO_LOGNAME, stderr=AUTO_LOGNAME):
    return f"echo {msg}; echo oops >&2"


@bash_app
def exit_with(code):
    return f"exit {code}"


@bash_app
def not_a_command():
    return 42


@bash_app
def write(text, outputs=()):
    return f"echo {text} > {outputs[0]}"


@bash_app
def cat(inputs=(), stdout=None):
    return f"cat {inputs[0]}"


@join_app
def fan(n):
    return [double(i) for i in range(n)]


@join_app
def fan_with_failure():
    return [double(1), fail("inner")]


def test_result_and_implicit_dependency(dfk):
    assert double(double(3)).result(timeout=60) == 12


def test_task_runs_on_a_celery_worker_process_named_for_the_executor(dfk):
    info = where().result(timeout=60)
    assert info["pid"] != os.getpid()
    assert info["worker"].startswith("celeriac-celery-")


def test_fan_in_over_inputs(dfk):
    futures = [double(i) for i in range(200)]
    assert add(inputs=futures).result(timeout=60) == sum(2 * i for i in range(200))


def test_user_exception_class_comes_back_with_remote_traceback(dfk):
    with pytest.raises(CustomError, match="boom") as info:
        fail("boom").result(timeout=60)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fail" in str(cause) and "raise CustomError(msg)" in str(cause)


def test_failed_dependency_fails_dependent_without_running_it(dfk):
    upstream = fail("root")
    downstream = double(upstream)
    with pytest.raises(DependencyError) as info:
        downstream.result(timeout=60)
    assert [tid for _e, tid in info.value.dependent_exceptions_tids] == [upstream.tid]
    assert isinstance(info.value.__cause__, CustomError)


def test_bash_app_stdout_and_stderr_files(dfk):
    fut = echo("hello")
    assert fut.result(timeout=60) == 0
    assert fut.stdout.startswith(dfk.run_dir)
    with open(fut.stdout) as fh:
        assert fh.read() == "hello\n"
    with open(fut.stderr) as fh:
        assert fh.read() == "oops\n"


def test_bash_exit_code(dfk):
    with pytest.raises(BashExitFailure) as info:
        exit_with(3).result(timeout=60)
    assert info.value.exitcode == 3


def test_bash_app_returning_non_string_is_a_clear_error(dfk):
    with pytest.raises(BashAppNoReturn, match="must return the command line as a str"):
        not_a_command().result(timeout=60)


def test_files_flow_between_bash_apps(dfk, tmp_path):
    target = File(str(tmp_path / "out.txt"))
    produced = write("data", outputs=[target])
    assert produced.outputs[0].tid == produced.tid
    out = str(tmp_path / "cat.out")
    assert cat(inputs=[produced.outputs[0]], stdout=out).result(timeout=60) == 0
    with open(out) as fh:
        assert fh.read() == "data\n"


def test_python_walltime_kills_a_call_blocked_in_c(dfk):
    start = time.monotonic()
    with pytest.raises(AppTimeout):
        sleep_then(60, "late", walltime=1).result(timeout=60)
    assert time.monotonic() - start < 15
    # The worker that ran it is still serving.
    assert double(21).result(timeout=60) == 42


def test_walltime_not_exceeded_returns_result(dfk):
    assert sleep_then(0.1, "ok", walltime=10).result(timeout=60) == "ok"


def test_unpicklable_argument_fails_the_future_with_serialization_error(dfk):
    fut = take(threading.Lock())
    with pytest.raises(SerializationError, match="could not serialize the arguments of take"):
        fut.result(timeout=60)


def test_unpicklable_result_fails_with_serialization_error(dfk):
    with pytest.raises(SerializationError, match="result"):
        give_lock().result(timeout=60)


def test_join_app_over_celery_tasks(dfk):
    assert fan(5).result(timeout=60) == [0, 2, 4, 6, 8]
    with pytest.raises(JoinError):
        fan_with_failure().result(timeout=60)


def test_task_status_names_the_state_as_parsl_does(dfk):
    ok, bad = double(1), fail("x")
    ok.result(timeout=60)
    with pytest.raises(CustomError):
        bad.result(timeout=60)
    assert (ok.task_status(), bad.task_status()) == ("exec_done", "failed")


def test_item_and_attribute_futures(dfk):
    info = where()
    assert info["worker"].result(timeout=60).startswith("celeriac-celery-")
    assert double(5).real.result(timeout=60) == 10


def test_many_tasks_all_complete(dfk):
    futures = [double(i) for i in range(2000)]
    assert [f.result(timeout=120) for f in futures] == [2 * i for i in range(2000)]
    celeriac.wait_for_current_tasks()
    assert not dfk.tasks


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
