"""Unit-test fixtures: DFKs on in-process executors, and an executor the test drives by hand.

No broker and no Celery worker here. ``ManualExecutor`` is the in-memory double of the
Executor interface (``submit(func, call, resource_specification) -> Future``): it records
every submission and lets the test decide when and how each one finishes, so retries,
lost-worker relaunches and ordering can be checked step by step.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass

import pytest

import celeriac
from celeriac import Config
from celeriac.executors import Executor, ThreadPoolExecutor
from celeriac.wire.call import AppFailed, Call
from celeriac.workers.execute import run_call


@dataclass
class Submission:
    """One ``submit`` the DFK made: what it asked for, and the future it was handed."""

    func: object
    call: Call
    resource_specification: dict
    future: Future

    def succeed(self, value=None) -> None:
        self.future.set_result(value)

    def fail(self, exc: BaseException) -> None:
        self.future.set_exception(exc)

    def run(self) -> None:
        """Run the call here, the way a worker would, and report its outcome."""
        try:
            self.future.set_result(run_call(self.func, self.call, isolate_walltime=False))
        except AppFailed as e:
            self.future.set_exception(e.failure.exception)


class ManualExecutor(Executor):
    """An executor whose tasks finish only when the test completes their futures."""

    resource_keys = frozenset({"cores"})

    def __init__(self, label: str = "manual"):
        self.label = label
        self.submissions: list[Submission] = []
        self.context = None
        self.shutdowns = 0
        self._cond = threading.Condition()

    def start(self, context) -> None:
        self.context = context

    def submit(self, func, call, resource_specification) -> Future:
        sub = Submission(func, call, dict(resource_specification), Future())
        with self._cond:
            self.submissions.append(sub)
            self._cond.notify_all()
        return sub.future

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Submission]:
        """Wait until at least ``count`` submissions have arrived; return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.submissions) >= count, timeout):
                raise AssertionError(
                    f"expected {count} submissions within {timeout}s, got "
                    f"{[s.call.name for s in self.submissions]}")
            return list(self.submissions)

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture(autouse=True)
def nothing_loaded():
    """Every unit test starts and ends with no DFK loaded."""
    celeriac.clear()
    yield
    celeriac.clear()


@pytest.fixture
def load_dfk(tmp_path):
    """``load_dfk(*executors, **config_options)`` loads a DFK whose run dirs are under
    tmp_path (default executor: a 4-thread ThreadPoolExecutor labelled 'threads').
    Every DFK it made is cleaned up after the test."""
    loaded = []

    def _load(*executors, **options):
        options.setdefault("run_dir", str(tmp_path / "runinfo"))
        executors = list(executors) or [ThreadPoolExecutor(label="threads", max_threads=4)]
        dfk = celeriac.load(Config(executors=executors, **options))
        loaded.append(dfk)
        return dfk

    yield _load
    for dfk in loaded:
        dfk.cleanup()


@pytest.fixture
def dfk(load_dfk):
    """A loaded DFK on a ThreadPoolExecutor labelled 'threads'."""
    return load_dfk()


@pytest.fixture
def manual():
    return ManualExecutor()


@pytest.fixture
def manual_dfk(load_dfk, manual):
    """A loaded DFK whose only executor is ``manual`` (a ManualExecutor)."""
    return load_dfk(manual)


UNIT_TIMEOUT = 20  # seconds; a unit test that needs longer is hanging


def pytest_collection_modifyitems(config, items):
    """Give every unit test's body a tight timeout (setup.cfg's 120 s is for integration
    tests). The body only: the last test of a session also carries the teardown of the
    session's services (Slurm, RabbitMQ, sshd), which is not the unit test's time."""
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.path).startswith(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT, func_only=True))
