"""Chains that complete synchronously (memo hits, failed dependencies, joins) at any depth.

Completing one task makes the next ready at once, inside the same call; the driver handles
those events from a queue instead of recursing, so neither the stack nor a callback's error
handling limits the depth, and every future resolves.
"""

import sys

import pytest

from celeriac import join_app, python_app
from celeriac.errors import DependencyError

DEPTH = 100_000


@python_app(cache=True)
def same(x):
    return x


@python_app
def root(x):
    return x


@python_app
def nothing(x):
    return x


@pytest.mark.timeout(60)
def test_a_100k_chain_of_memo_hits_on_a_running_task_resolves_every_future(manual_dfk, manual):
    start = root(7)
    futures = [same(start)]
    for _ in range(DEPTH - 1):
        futures.append(same(futures[-1]))
    manual.wait_for(1)[0].run()          # the root finishes: the first `same` is sent
    manual.wait_for(2)[1].run()          # it runs once; the rest are memo hits, in one go
    assert futures[-1].result(timeout=30) == 7
    assert all(f.done() and f.result() == 7 for f in futures)
    assert len(manual.submissions) == 2
    assert {f.task_status() for f in futures[1:]} == {"memo_done"}


@pytest.mark.timeout(60)
def test_a_100k_chain_failing_at_its_root_fails_every_future(manual_dfk, manual):
    start = root(1)
    futures = [nothing(start)]
    for _ in range(DEPTH - 1):
        futures.append(nothing(futures[-1]))
    manual.wait_for(1)[0].fail(ValueError("the root failed"))
    with pytest.raises(DependencyError):
        futures[-1].result(timeout=30)
    assert all(f.done() for f in futures)
    assert {type(f.exception()) for f in futures} == {DependencyError}
    assert all(isinstance(f.exception().__cause__, ValueError) for f in futures)
    assert len(manual.submissions) == 1


@join_app
def nest(depth):
    return nothing(0) if depth == 0 else nest(depth - 1)


def test_deeply_nested_join_apps_resolve(dfk):
    depth = max(2000, 2 * sys.getrecursionlimit())
    assert nest(depth).result(timeout=15) == 0
