"""An app that calls sys.exit() or raises KeyboardInterrupt (any BaseException) fails only its
own task, with an error saying what it did; the worker lives on and runs the next tasks."""

import os
import sys

import pytest
from ledger import Figures, Ledger, mark

import celeriac
from celeriac import Config, bash_app, python_app
from celeriac.errors import AppExited
from celeriac.executors import CeleryExecutor, ThreadPoolExecutor


class Custom(BaseException):
    """A user's own BaseException subclass (not an Exception)."""


def _poison(ledger_dir, key, how, walltime=None):
    mark(ledger_dir, key)
    if how == "exit3":
        sys.exit(3)
    if how == "exit":
        sys.exit()
    if how == "exit-text":
        raise SystemExit("bye")
    if how == "keyboard":
        raise KeyboardInterrupt
    if how == "generator":
        raise GeneratorExit
    if how == "custom":
        raise Custom("mine")
    return 2 * key


poison = python_app(_poison, executors=["celery"])
poison_threads = python_app(_poison, executors=["threads"])


@bash_app(executors=["celery"])
def poison_bash(ledger_dir, key, how):
    mark(ledger_dir, key)
    if how == "exit3":
        sys.exit(3)
    return "true"


#: What the user sees for each kind of poison.
SAYS = {
    "exit3": "the app called sys.exit(3)",
    "exit": "the app called sys.exit()",
    "exit-text": "the app called sys.exit('bye')",
    "keyboard": "the app raised KeyboardInterrupt",
    "generator": "the app raised GeneratorExit",
    "custom": "the app raised test_poisoned_tasks.Custom: mine",
}


@pytest.fixture(scope="module")
def dfk(tmp_path_factory):
    celeriac.clear()
    # One worker process: every task must run in it, poisoned or not.
    d = celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=1),
                              ThreadPoolExecutor(label="threads", max_threads=2)],
                             run_dir=str(tmp_path_factory.mktemp("runinfo"))))
    yield d
    d.cleanup()
    celeriac.clear()


def _worker_pids(ledger) -> set:
    return {name.split(".")[1] for name in os.listdir(ledger.dir)}


def _check(ledger, futs, poisoned, timeout=120):
    expected = {k: 2 * k for k in futs}
    figures = ledger.figures(futs, expected, timeout=timeout)
    assert figures == Figures(submitted=len(futs), correct=len(futs) - len(poisoned),
                              lost=len(poisoned), ran_twice=0, hung=0)
    for key, how in poisoned.items():
        exc = futs[key].exception()
        assert isinstance(exc, AppExited), repr(exc)
        assert SAYS[how] in str(exc)
        assert "poison" in str(exc)  # names the app
    return figures


@pytest.mark.timeout(200)
def test_single_call_messages(dfk, tmp_path):
    ledger = Ledger(tmp_path)
    poisoned = {1: "exit3", 3: "keyboard", 5: "generator", 7: "exit", 9: "exit-text",
                11: "custom"}
    futs = {}
    for k in range(14):  # one at a time: each message carries one call
        futs[k] = poison(ledger.dir, k, poisoned.get(k, "none"))
        try:
            futs[k].result(timeout=60)
        except BaseException:
            pass
    _check(ledger, futs, poisoned)
    assert len(_worker_pids(ledger)) == 1  # the worker lived on
    # The traceback names where the app exited.
    assert "sys.exit(3)" in str(futs[1].exception().__cause__)


@pytest.mark.timeout(200)
def test_packed_messages(dfk, tmp_path):
    link = dfk.executors["celery"]._link
    ledger = Ledger(tmp_path)
    assert poison(ledger.dir, 100, "none").result(timeout=60) == 200  # measures its run time
    messages, calls = link.stats["messages"], link.stats["calls"]
    poisoned = {k: how for k, how in zip(range(0, 32, 5), SAYS)}
    futs = {k: poison(ledger.dir, k, poisoned.get(k, "none")) for k in range(32)}
    _check(ledger, futs, poisoned)
    assert link.stats["calls"] - calls == 32
    assert link.stats["messages"] - messages < 32  # they really were packed
    assert len(_worker_pids(ledger)) == 1


@pytest.mark.timeout(200)
def test_walltime_forked_calls(dfk, tmp_path):
    ledger = Ledger(tmp_path)
    poisoned = {0: "exit3", 2: "keyboard"}
    futs = {k: poison(ledger.dir, k, poisoned.get(k, "none"), walltime=60) for k in range(4)}
    _check(ledger, futs, poisoned)


@pytest.mark.timeout(200)
def test_bash_app_whose_function_exits(dfk, tmp_path):
    ledger = Ledger(tmp_path)
    bad = poison_bash(ledger.dir, 0, "exit3")
    good = poison_bash(ledger.dir, 1, "none")
    with pytest.raises(AppExited, match=r"poison_bash.*the app called sys\.exit\(3\)"):
        bad.result(timeout=90)
    assert good.result(timeout=90) == 0
    assert len(_worker_pids(ledger)) == 1


@pytest.mark.timeout(120)
def test_thread_pool_apps(dfk, tmp_path):
    ledger = Ledger(tmp_path)
    poisoned = {0: "exit3", 1: "keyboard", 2: "generator", 3: "custom"}
    futs = {k: poison_threads(ledger.dir, k, poisoned.get(k, "none")) for k in range(6)}
    _check(ledger, futs, poisoned, timeout=60)
    assert _worker_pids(ledger) == {str(os.getpid())}
    # The pool still works.
    assert poison_threads(ledger.dir, 50, "none").result(timeout=30) == 100
