"""The app decorators: python_app, bash_app, join_app (Parsl's names and arguments)."""

from __future__ import annotations

import functools
import inspect
from typing import Optional

from celeriac.orchestrator import loader
from celeriac.orchestrator.retries import make_policy

_DEFAULTED = ("stdout", "stderr", "walltime", "parsl_resource_specification", "inputs", "outputs")


class AppBase:
    """A decorated function. Calling it submits a task and returns an AppFuture."""

    kind = "python"

    def __init__(self, func, data_flow_kernel=None, executors="all", cache: bool = False,
                 ignore_for_cache: Optional[list] = None, retry_policy=None):
        if not callable(func):
            raise TypeError(f"an app must decorate a function, not {type(func).__name__}")
        self.func = func
        self.data_flow_kernel = data_flow_kernel
        self.executors = executors
        self.cache = cache
        self.ignore_for_cache = list(ignore_for_cache or [])
        self.retry_policy = make_policy(retry_policy, f"app {func.__name__!r}")
        functools.update_wrapper(self, func)
        params = inspect.signature(func).parameters
        # Defaults in the signature (stdout='x.out', walltime=5, ...) apply to every call.
        self.kwargs = {name: params[name].default for name in _DEFAULTED
                       if name in params and params[name].default is not inspect.Parameter.empty}
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self.accepts = None if takes_any else frozenset(params)

    def __call__(self, *args, **kwargs):
        dfk = self.data_flow_kernel or loader.dfk()
        invocation = dict(self.kwargs)
        invocation.update(kwargs)
        return dfk.submit(self.func, app_args=args, executors=self.executors, cache=self.cache,
                          ignore_for_cache=self.ignore_for_cache, app_kwargs=invocation,
                          join=self.kind == "join", kind=self.kind,
                          func_name=self.__name__, accepts=self.accepts,
                          retry_policy=self.retry_policy)

    def __repr__(self):
        return f"<{type(self).__name__} {self.__name__}>"


class PythonApp(AppBase):
    kind = "python"


class BashApp(AppBase):
    kind = "bash"


class JoinApp(AppBase):
    kind = "join"


def _decorator(cls, function, **options):
    if function is not None:
        return cls(function, **options)
    return lambda f: cls(f, **options)


def python_app(function=None, data_flow_kernel=None, cache=False, executors="all",
               ignore_for_cache=None, retry_policy=None):
    """Make a function an app whose calls run on an executor and return AppFutures.

    Args:
        function: the function (or use ``@python_app(...)`` with options).
        data_flow_kernel: the DFK to submit to; default the loaded one.
        cache: reuse the result of an identical earlier call (see ``id_for_memo``).
        executors: labels of the executors it may run on; default all.
        ignore_for_cache: keyword arguments left out of the cache key.
        retry_policy: a ``tenacity.Retrying`` (or dict of its retry/wait/stop) for this app,
            taking precedence over ``Config(retry_policy=...)``.
    """
    return _decorator(PythonApp, function, data_flow_kernel=data_flow_kernel, cache=cache,
                      executors=executors, ignore_for_cache=ignore_for_cache,
                      retry_policy=retry_policy)


def bash_app(function=None, data_flow_kernel=None, cache=False, executors="all",
             ignore_for_cache=None, retry_policy=None):
    """Make a function that returns a command line an app that runs it under /bin/bash.
    Its result is the command's exit code (0); options as for :func:`python_app`."""
    return _decorator(BashApp, function, data_flow_kernel=data_flow_kernel, cache=cache,
                      executors=executors, ignore_for_cache=ignore_for_cache,
                      retry_policy=retry_policy)


def join_app(function=None, data_flow_kernel=None, cache=False, ignore_for_cache=None,
             retry_policy=None):
    """Make a function that launches apps and returns their future(s) an app itself;
    its result is their result(s). It runs in the orchestrator process."""
    return _decorator(JoinApp, function, data_flow_kernel=data_flow_kernel, cache=cache,
                      ignore_for_cache=ignore_for_cache, retry_policy=retry_policy)
