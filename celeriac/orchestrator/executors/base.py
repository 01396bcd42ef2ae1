"""Executor: where the DFK sends a task once its dependencies are done.

The contract: :meth:`submit` takes the app's function and one
:class:`~celeriac.wire.call.Call`, and returns a ``concurrent.futures.Future`` that resolves
to the app's return value, or fails with the app's exception (its worker traceback as
``__cause__``). A future failing with :class:`~celeriac.errors.WorkerLost` means the task
did not finish because its worker died; the DFK decides whether to relaunch it.
:meth:`shutdown` is safe to call twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import Future

from celeriac.errors import InvalidResourceSpecification


class Executor(ABC):
    """Base of all executors: a label, start/submit/shutdown, resource-spec validation."""

    label: str = "executor"
    #: keys this executor accepts in ``parsl_resource_specification``
    resource_keys: frozenset = frozenset()

    def start(self, context) -> None:
        """Get ready to run tasks. ``context`` is the DFK's :class:`RunContext`.

        An executor that was shut down may be started again by a new DFK (a Config loaded a
        second time, as in Parsl): it then starts a new run."""

    @abstractmethod
    def submit(self, func, call, resource_specification: dict) -> Future:
        """Run ``func`` as described by ``call``; return a future of its result."""

    def shutdown(self) -> None:
        """Stop everything this executor started. Safe to call more than once."""

    def validate_resource_spec(self, spec: dict) -> None:
        """Raise InvalidResourceSpecification for keys this executor does not accept."""
        invalid = set(spec) - self.resource_keys
        if invalid:
            accepted = sorted(self.resource_keys) or "none"
            raise InvalidResourceSpecification(
                invalid, f"executor {self.label!r} ({type(self).__name__}) does not accept "
                f"resource specification keys {sorted(invalid)}; accepted keys: {accepted}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def __repr__(self):
        return f"{type(self).__name__}(label={self.label!r})"
