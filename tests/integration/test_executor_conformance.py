"""What every executor must do, run against each one (as CPython's executor tests are).

The same apps and assertions run on ThreadPoolExecutor (in-process) and CeleryExecutor (real
Redis, real `celery worker` processes); behaviour only one executor has lives in its own file.
"""

import pytest

import celeriac
from celeriac import AUTO_LOGNAME, Config, File, bash_app, join_app, python_app
from celeriac.errors import BashAppNoReturn, BashExitFailure, DependencyError, JoinError
from celeriac.executors import CeleryExecutor, ThreadPoolExecutor

pytestmark = pytest.mark.integration

EXECUTORS = {
    "threads": lambda: ThreadPoolExecutor(label="threads", max_threads=2),
    "celery": lambda: CeleryExecutor(label="celery", workers_per_node=2),
    # The same executor on RabbitMQ (the session's test broker) instead of the embedded Redis.
    "celery-amqp": lambda: CeleryExecutor(label="celery", workers_per_node=2),
}


@pytest.fixture(scope="module", params=sorted(EXECUTORS))
def dfk(request, tmp_path_factory):
    celeriac.clear()
    broker = request.getfixturevalue("rabbitmq") if request.param.endswith("-amqp") else None
    d = celeriac.load(Config([EXECUTORS[request.param]()], broker=broker,
                             run_dir=str(tmp_path_factory.mktemp(request.param))))
    yield d
    d.cleanup()
    celeriac.clear()


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
def as_dict(x):
    return {"value": x}


@python_app
def sleep_then(seconds, value):
    import time
    time.sleep(seconds)
    return value


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


def test_fan_in_over_inputs(dfk):
    futures = [double(i) for i in range(200)]
    assert add(inputs=futures).result(timeout=60) == sum(2 * i for i in range(200))


def test_user_exception_comes_back_as_its_own_class(dfk):
    with pytest.raises(CustomError, match="boom"):
        fail("boom").result(timeout=60)


def test_failed_dependency_fails_dependent_without_running_it(dfk):
    upstream = fail("root")
    downstream = double(upstream)
    with pytest.raises(DependencyError) as info:
        downstream.result(timeout=60)
    assert [d for _e, d in info.value.dependent_exceptions_tids] == [f"task {upstream.tid}"]
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


def test_walltime_not_exceeded_returns_result(dfk):
    assert sleep_then(0.1, "ok", walltime=10).result(timeout=60) == "ok"


def test_join_app(dfk):
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
    assert as_dict(7)["value"].result(timeout=60) == 7
    assert double(5).real.result(timeout=60) == 10


def test_many_tasks_all_complete_and_are_forgotten(dfk):
    futures = [double(i) for i in range(1000)]
    assert [f.result(timeout=120) for f in futures] == [2 * i for i in range(1000)]
    celeriac.wait_for_current_tasks()
    assert not dfk.tasks
