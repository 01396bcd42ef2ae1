"""The app decorators and what calling an app returns."""

import threading
import types
from concurrent.futures import Future

import pytest

import celeriac
from celeriac import AppFuture, Config, bash_app, join_app, python_app
from celeriac.errors import (
    AppTimeout,
    ConfigurationError,
    InvalidResourceSpecification,
    NoDataFlowKernelError,
)
from celeriac.executors import ThreadPoolExecutor


@python_app
def plain(x):
    """Doubles x."""
    return 2 * x


@python_app()
def with_parens(x):
    return x + 1


@python_app(executors=["nowhere"])
def pinned_to_missing_executor():
    return 1


@python_app
def where_am_i():
    return threading.current_thread().name


def test_decorator_without_arguments_makes_an_app(dfk):
    fut = plain(21)
    assert isinstance(fut, AppFuture)
    assert fut.result(timeout=5) == 42


def test_decorator_with_empty_arguments_makes_an_app(dfk):
    assert with_parens(1).result(timeout=5) == 2


def test_app_keeps_the_function_name_and_docstring():
    assert plain.__name__ == "plain"
    assert plain.__doc__ == "Doubles x."
    assert repr(plain) == "<PythonApp plain>"


def test_decorating_a_non_callable_is_a_type_error():
    with pytest.raises(TypeError, match="int"):
        python_app(3)


def test_calling_an_app_before_load_raises_no_dataflow_kernel_error():
    with pytest.raises(NoDataFlowKernelError, match=r"celeriac\.load\(\)"):
        plain(1)


def test_app_with_explicit_data_flow_kernel_needs_no_load(tmp_path):
    kernel = celeriac.DataFlowKernel(Config([ThreadPoolExecutor(label="t")],
                                            run_dir=str(tmp_path)))
    try:
        @python_app(data_flow_kernel=kernel)
        def triple(x):
            return 3 * x

        assert triple(2).result(timeout=5) == 6
    finally:
        kernel.cleanup()


def test_executors_option_sends_the_app_to_that_executor(load_dfk):
    load_dfk(ThreadPoolExecutor(label="alpha"), ThreadPoolExecutor(label="beta"))

    @python_app(executors=["beta"])
    def on_beta():
        return threading.current_thread().name

    @python_app(executors="alpha")
    def on_alpha():
        return threading.current_thread().name

    assert all(on_beta().result(timeout=5).startswith("celeriac-beta") for _ in range(5))
    assert all(on_alpha().result(timeout=5).startswith("celeriac-alpha") for _ in range(5))


def test_unknown_executor_label_fails_at_call_time_naming_the_label(dfk):
    # decorating succeeded at import time above; only the call finds out
    with pytest.raises(ConfigurationError) as info:
        pinned_to_missing_executor()
    assert "nowhere" in str(info.value)
    assert "threads" in str(info.value)  # and says which labels exist
    assert dfk.tasks == {}


def test_signature_default_stdout_is_used_for_every_call(dfk, tmp_path):
    target = str(tmp_path / "out.txt")

    @bash_app
    def hello(stdout=target):
        return "echo hello"

    fut = hello()
    assert fut.stdout == target
    assert fut.result(timeout=10) == 0
    assert open(target).read() == "hello\n"


def test_call_time_stdout_overrides_signature_default(dfk, tmp_path):
    @bash_app
    def hello(stdout=str(tmp_path / "default.txt")):
        return "echo hi"

    fut = hello(stdout=str(tmp_path / "chosen.txt"))
    assert fut.result(timeout=10) == 0
    assert fut.stdout == str(tmp_path / "chosen.txt")
    assert (tmp_path / "chosen.txt").read_text() == "hi\n"
    assert not (tmp_path / "default.txt").exists()


def test_signature_default_walltime_applies(dfk):
    release = threading.Event()

    @python_app
    def stuck(walltime=0.3):
        release.wait(10)

    try:
        with pytest.raises(AppTimeout, match="stuck"):
            stuck().result(timeout=5)
    finally:
        release.set()


def test_app_without_special_parameters_accepts_them_at_call_time(dfk):
    # walltime=/stdout= steer celeriac; a function that does not take them is not passed them
    assert plain(4, walltime=5).result(timeout=5) == 8


def test_app_with_var_kwargs_receives_the_special_kwargs(dfk):
    @python_app
    def spy(**kwargs):
        return sorted(kwargs)

    assert spy(walltime=5, other=1).result(timeout=5) == ["other", "walltime"]


@pytest.mark.parametrize("walltime", [0, -1, "10", True])
def test_bad_walltime_is_a_configuration_error(dfk, walltime):
    with pytest.raises(ConfigurationError, match="walltime"):
        plain(1, walltime=walltime)


def test_resource_specification_the_executor_rejects_fails_the_future(dfk):
    fut = plain(1, parsl_resource_specification={"gpus": 1})   # as in Parsl: no raise here
    with pytest.raises(InvalidResourceSpecification) as info:
        fut.result(timeout=5)
    assert fut.task_status() == "failed"
    assert info.value.invalid_keys == {"gpus"}
    assert "gpus" in str(info.value) and "threads" in str(info.value)


def test_resource_specification_reaches_the_executor(manual_dfk, manual):
    plain(1, parsl_resource_specification={"cores": 2})
    [sub] = manual.wait_for(1)
    assert sub.resource_specification == {"cores": 2}


def test_getitem_on_a_future_gives_a_future_of_the_item(dfk):
    @python_app
    def make():
        return {"a": 1, "b": [10, 20]}

    fut = make()
    item = fut["b"]
    assert isinstance(item, Future)
    assert item.result(timeout=5) == [10, 20]
    assert fut["a"].result(timeout=5) == 1


def test_attribute_on_a_future_gives_a_future_of_the_attribute(dfk):
    @python_app
    def make():
        return types.SimpleNamespace(value=7)

    attr = make().value
    assert isinstance(attr, Future)
    assert attr.result(timeout=5) == 7


def test_item_and_attribute_futures_do_not_block_and_are_dependencies(manual_dfk, manual):
    @python_app
    def make():
        return {"n": types.SimpleNamespace(real=5)}

    parent = make()
    doubled = plain(parent["n"].real)  # built while `parent` is still running
    assert not doubled.done()
    manual.wait_for(1)[0].run()
    manual.wait_for(2)[1].run()
    assert doubled.result(timeout=5) == 10


def test_missing_key_on_a_future_fails_the_item_future(dfk):
    @python_app
    def make():
        return {}

    with pytest.raises(KeyError):
        make()["absent"].result(timeout=5)


def test_private_attributes_of_a_future_are_not_turned_into_futures(dfk):
    fut = plain(1)
    with pytest.raises(AttributeError):
        fut._no_such_thing


def test_each_call_gets_its_own_increasing_tid(dfk):
    futs = [plain(i) for i in range(5)]
    tids = [f.tid for f in futs]
    assert tids == sorted(tids) and len(set(tids)) == 5
    assert all(isinstance(t, int) for t in tids)


def test_app_future_repr_names_tid_app_and_state(dfk):
    fut = plain(1)
    fut.result(timeout=5)
    text = repr(fut)
    assert f"tid={fut.tid}" in text
    assert "plain" in text
    assert "FINISHED" in text


def test_join_app_decorator_with_and_without_arguments(dfk):
    @join_app
    def j1():
        return plain(1)

    @join_app()
    def j2():
        return plain(2)

    assert (j1().result(timeout=5), j2().result(timeout=5)) == (2, 4)


def test_bash_app_decorator_with_and_without_arguments(dfk):
    @bash_app
    def b1():
        return "true"

    @bash_app(executors=["threads"])
    def b2():
        return "true"

    assert (b1().result(timeout=10), b2().result(timeout=10)) == (0, 0)


def test_a_finished_app_future_cannot_be_cancelled(manual_dfk, manual):
    fut = plain(3)
    manual.wait_for(1)[0].run()
    assert fut.result(timeout=5) == 6
    assert fut.cancel() is False  # cancel() does not lie (tests/unit/test_cancel.py)
    assert not fut.cancelled()


def test_an_app_future_can_be_awaited_in_asyncio_code(dfk):
    import asyncio

    async def main():
        first = await plain(20)
        return first, await asyncio.gather(plain(first), plain(1))

    assert asyncio.run(main()) == (40, [80, 2])


def test_app_future_is_generic_in_its_result_type_for_type_checkers():
    from celeriac import AppFuture
    alias = AppFuture[int]
    assert alias.__origin__ is AppFuture and alias.__args__ == (int,)
