"""A ``concurrent.futures.Executor`` over a DataFlowKernel (Parsl's ``ParslPoolExecutor``).

Code written for a standard executor runs its calls as celeriac tasks unchanged::

    with ParslPoolExecutor(Config()) as pool:
        print(list(pool.map(abs, [-1, -2, 3])))

A future passed as an argument is a dependency, as with any app.
"""

from __future__ import annotations

import concurrent.futures
import weakref
from typing import Callable

from celeriac.errors import ConfigurationError
from celeriac.orchestrator.apps import PythonApp

__all__ = ["ParslPoolExecutor"]


class ParslPoolExecutor(concurrent.futures.Executor):
    """Submit plain functions as python apps to a DataFlowKernel.

    Args:
        config: a Config to start a DataFlowKernel of the pool's own (cleaned up at
            :meth:`shutdown`), or
        dfk: a running DataFlowKernel to submit to (left running at shutdown).
        executors: the executor labels the calls may run on (default: all).

    Raises:
        ConfigurationError: neither or both of ``config`` and ``dfk`` are given.
    """

    def __init__(self, config=None, dfk=None, executors="all"):
        if (config is None) == (dfk is None):
            raise ConfigurationError("ParslPoolExecutor takes a config= or a dfk=, and not both")
        if dfk is None:
            from celeriac.orchestrator.dflow import DataFlowKernel
            dfk = DataFlowKernel(config)
        self._owns_dfk = config is not None
        self.dfk = dfk
        self._executors = executors
        self._apps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get_app(self, fn: Callable) -> PythonApp:
        """The python app this pool runs ``fn`` as (one per function)."""
        try:
            return self._apps[fn]
        except (KeyError, TypeError):
            app = PythonApp(fn, data_flow_kernel=self.dfk, executors=self._executors)
            try:
                self._apps[fn] = app
            except TypeError:  # not weak-referenceable: made anew each time
                pass
            return app

    def submit(self, fn, /, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` as a task; return its AppFuture."""
        return self.get_app(fn)(*args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Wait for the submitted tasks (if ``wait``), then clean up the pool's own
        DataFlowKernel; a DataFlowKernel passed in is left running. Idempotent."""
        if not self._owns_dfk:
            return
        if wait and not cancel_futures and not self.dfk.cleanup_called:
            self.dfk.wait_for_current_tasks()
        self.dfk.cleanup()
