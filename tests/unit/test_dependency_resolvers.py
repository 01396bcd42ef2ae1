"""Which futures in a call's arguments are dependencies: Parsl's shallow and deep resolvers."""

from concurrent.futures import Future

import pytest

from celeriac import Config, python_app
from celeriac.dependency_resolvers import (
    DEEP_DEPENDENCY_RESOLVER,
    SHALLOW_DEPENDENCY_RESOLVER,
    DependencyResolver,
    deep_traverse_to_gather,
)
from celeriac.errors import ConfigurationError, DependencyError


@python_app
def double(x):
    return 2 * x


@python_app
def explode():
    raise ValueError("inner failure")


@python_app
def echo(value, **kwargs):
    return value, kwargs


def test_by_default_a_nested_future_is_passed_as_it_is_as_in_parsl(dfk):
    inner = double(1)
    value, _ = echo([inner]).result(timeout=5)
    assert value[0] is inner


@pytest.mark.parametrize("resolver", [None, SHALLOW_DEPENDENCY_RESOLVER])
def test_shallow_resolution_waits_for_direct_futures_and_inputs(load_dfk, resolver):
    load_dfk(dependency_resolver=resolver)
    value, kwargs = echo(double(1), k=double(2), inputs=[double(3)]).result(timeout=5)
    assert value == 2 and kwargs == {"k": 4, "inputs": [6]}


def test_the_deep_resolver_waits_for_futures_inside_containers(load_dfk):
    load_dfk(dependency_resolver=DEEP_DEPENDENCY_RESOLVER)
    nested = {"a": [double(1), (double(2), {double(3)})], "b": 7}
    value, kwargs = echo(nested, other=[double(4)], inputs=[[double(5)]]).result(timeout=5)
    assert value == {"a": [2, (4, {6})], "b": 7}
    assert kwargs == {"other": [8], "inputs": [[10]]}


def test_a_failed_nested_future_fails_the_call_with_dependency_error(load_dfk):
    load_dfk(dependency_resolver=DEEP_DEPENDENCY_RESOLVER)
    with pytest.raises(DependencyError) as info:
        echo([double(1), explode()]).result(timeout=5)
    assert isinstance(info.value.__cause__, ValueError)


def test_a_resolver_of_ones_own_finds_futures_where_it_says(load_dfk):
    class Box:
        def __init__(self, item):
            self.item = item

    @deep_traverse_to_gather.register(Box)
    def _(box):
        return [box.item] if isinstance(box.item, Future) else []

    resolver = DependencyResolver(
        traverse_to_gather=lambda v: deep_traverse_to_gather(v),
        traverse_to_unwrap=lambda v: Box(v.item.result()) if isinstance(v, Box) else v)
    load_dfk(dependency_resolver=resolver)
    value, _ = echo(Box(double(21))).result(timeout=5)
    assert value.item == 42


def test_a_dependency_resolver_of_the_wrong_type_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="dependency_resolver"):
        Config(dependency_resolver="deep")
