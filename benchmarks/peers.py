"""Ray, Dask distributed and ProcessPoolExecutor adapters, wrapped to give Parsl's semantics.

Each adapter's ``decorators()`` gives ``python_app``/``bash_app``: calling an app
returns a future with ``.result()``, and futures passed as arguments, keyword
arguments or in ``inputs=`` are resolved before the app runs (a failed one
fails the app). A bash app's function returns a command line, run with
``/bin/bash`` in the worker (Parsl's ``executable='/bin/bash'``; this was
``/bin/sh`` before 2026-12-05, which is dash on Debian and starts in about a
third of bash's time), and the app's result is its exit code (non-zero
raises), as in Parsl. The wrapping is the thinnest each system allows: Ray and
Dask resolve futures passed as top-level arguments themselves, so every call is
flattened into top-level arguments (``_flatten``) and rebuilt in the worker
(``_exec``); the process pool has no dependency handling at all, so a small
resolver here waits for the futures and submits when the last one is done.

Apps pickle by name (``_App.__reduce__``): the worker imports ``workloads``
and looks the app up, so no system has to pickle a function by value.
These systems live in ``benchmarks/.venv-peers`` (see setup_peers.sh); the
process pool runs with the driver's interpreter.
"""
import concurrent.futures
import contextlib
import functools
import importlib
import os
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS_PYTHON = os.path.join(HERE, ".venv-peers", "bin", "python")


def _app_named(module, name):
    return getattr(importlib.import_module(module), name)


class _App:
    """A decorated function: calling it submits it to its system."""

    def __init__(self, system, fn, bash):
        functools.update_wrapper(self, fn)
        self.fn, self.bash, self.system = fn, bash, system

    def __reduce__(self):
        return _app_named, (self.fn.__module__, self.fn.__qualname__)

    def __call__(self, *args, **kwargs):
        return self.system.submit(self, args, kwargs)

    def run(self, args, kwargs):
        """In the worker: the function itself, or its command line for a bash app."""
        out = self.fn(*args, **kwargs)
        if not self.bash:
            return out
        code = subprocess.call(out, shell=True, executable="/bin/bash",
                               stdout=subprocess.DEVNULL)
        if code:
            raise RuntimeError(f"bash app {self.fn.__name__} exited with {code}: {out!r}")
        return code


def _flatten(args, kwargs):
    """(spec, flat): every argument, keyword value and input as one flat list."""
    inputs = kwargs.get("inputs")
    if inputs is not None:
        kwargs = {k: v for k, v in kwargs.items() if k != "inputs"}
    keys = tuple(kwargs)
    flat = [*args, *kwargs.values(), *(inputs or ())]
    return (len(args), keys, None if inputs is None else len(inputs)), flat


def _exec(app, spec, *flat):
    """In the worker: rebuild the call from ``_flatten``'s output and run the app."""
    nargs, keys, ninputs = spec
    kwargs = dict(zip(keys, flat[nargs:nargs + len(keys)]))
    if ninputs is not None:
        kwargs["inputs"] = list(flat[nargs + len(keys):])
    return app.run(flat[:nargs], kwargs)


class _Peer:
    name = "?"
    python = PEERS_PYTHON

    def __init__(self, workers):
        self.workers = workers

    def decorators(self):
        def python_app(fn=None, **_kw):
            return _App(self, fn, False) if fn else (lambda f: _App(self, f, False))

        def bash_app(fn=None, **_kw):
            return _App(self, fn, True) if fn else (lambda f: _App(self, f, True))
        return python_app, bash_app


class _RayFuture:
    """An ObjectRef with ``result()``, so workloads treat every system alike."""

    __slots__ = ("ref",)

    def __init__(self, ref):
        self.ref = ref

    def result(self, timeout=None):
        import ray
        return ray.get(self.ref, timeout=timeout)


class Ray(_Peer):
    """Ray, local cluster of ``ray.init(num_cpus=2)``: tasks through raylet, values
    through its shared-memory object store; futures passed on as ObjectRefs."""

    name = "ray"

    def version(self):
        import ray
        return "ray " + ray.__version__

    @contextlib.contextmanager
    def load(self):
        import ray
        ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        try:
            self._remote = ray.remote(_exec)
            yield self
        finally:
            ray.shutdown()

    def submit(self, app, args, kwargs):
        spec, flat = _flatten(args, kwargs)
        flat = [x.ref if type(x) is _RayFuture else x for x in flat]
        return _RayFuture(self._remote.remote(app, spec, *flat))


class Dask(_Peer):
    """Dask distributed LocalCluster(n_workers=2, threads_per_worker=1): a scheduler
    and two worker processes (with nannies) over TCP on loopback."""

    name = "dask"

    def version(self):
        import distributed
        return "dask distributed " + distributed.__version__

    @contextlib.contextmanager
    def load(self):
        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None, host="127.0.0.1") as cluster, \
                Client(cluster) as self._client:
            yield self  # leaving closes the client, then the scheduler and workers

    def submit(self, app, args, kwargs):
        spec, flat = _flatten(args, kwargs)
        # pure=False: every call is a new task, as in Parsl (no deduplication by hash).
        return self._client.submit(_exec, app, spec, *flat, pure=False)


class ProcessPool(_Peer):
    """concurrent.futures.ProcessPoolExecutor(2) in the submitting process, plus a
    small dependency resolver: no network, no broker, the floor of IPC cost."""

    name = "processpool"
    python = sys.executable

    def version(self):
        return "ProcessPoolExecutor python " + sys.version.split()[0]

    @contextlib.contextmanager
    def load(self):
        self._pool = concurrent.futures.ProcessPoolExecutor(self.workers)
        try:
            yield self
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, app, args, kwargs):
        spec, flat = _flatten(args, kwargs)
        deps = [x for x in flat if isinstance(x, concurrent.futures.Future)]
        if not deps:
            return self._pool.submit(_exec, app, spec, *flat)
        outer = concurrent.futures.Future()
        lock, left = threading.Lock(), [len(deps)]

        def launch():
            try:
                values = [x.result() if isinstance(x, concurrent.futures.Future) else x
                          for x in flat]
                inner = self._pool.submit(_exec, app, spec, *values)
            except BaseException as e:  # a failed dependency fails the app
                outer.set_exception(e)
                return
            inner.add_done_callback(functools.partial(_copy, outer))

        def one_done(_):
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                launch()
        for d in deps:
            d.add_done_callback(one_done)
        return outer


def _copy(outer, inner):
    e = inner.exception()
    if e is None:
        outer.set_result(inner.result())
    else:
        outer.set_exception(e)
