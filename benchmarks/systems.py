"""Adapters for the systems the benchmarks compare.

Every adapter offers the same three things, so one set of workloads runs on all:

* ``decorators()`` -> ``(python_app, bash_app)`` with Parsl semantics: calling an
  app returns a future, and futures passed as arguments (or in ``inputs=``) are
  dependencies resolved before the app runs;
* ``load()``: a context manager that starts the system with 2 workers and shuts
  it down (workers included) on exit;
* ``python``: the interpreter the driver runs this system's children with.
  The peers are systems we measure against, never dependencies of celeriac, so
  Parsl lives in ``benchmarks/.venv-parsl`` and Ray and Dask in
  ``benchmarks/.venv-peers`` (see setup_peers.sh); their adapters, and the
  process pool's, are in ``peers.py``.

Imports of the systems themselves happen lazily inside the methods: this module
is imported by the driver (plain interpreter) and by every child (either one).
"""
import contextlib
import os
import sys
import time

import peers

HERE = os.path.dirname(os.path.abspath(__file__))
PARSL_PYTHON = os.path.join(HERE, ".venv-parsl", "bin", "python")
RUN_DIR = os.path.join(HERE, "runinfo")
WORKERS = 2


class _Parsl:
    """Shared by both Parsl executors: only the Config differs."""

    python = PARSL_PYTHON

    def decorators(self):
        from parsl import bash_app, python_app
        return python_app, bash_app

    def version(self):
        import parsl
        return "parsl " + parsl.__version__

    def config(self):
        raise NotImplementedError

    @contextlib.contextmanager
    def load(self):
        import parsl
        dfk = parsl.load(self.config())
        try:
            yield dfk
        finally:
            # Explicit rather than `with dfk:` so that older Parsl works too.
            dfk.cleanup()
            parsl.clear()


class ParslHTEX(_Parsl):
    """The reference (ratio 1.0): HighThroughputExecutor, one local block of 2 workers."""

    name = "parsl-htex"

    def config(self):
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider
        htex = HighThroughputExecutor(
            label="htex",
            address="127.0.0.1",  # loopback only: nothing leaves this machine
            max_workers_per_node=WORKERS,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
        )
        return Config(executors=[htex], run_dir=RUN_DIR)


class ParslThreads(_Parsl):
    """Parsl's in-process ThreadPoolExecutor: the cost of the DFK alone, no IPC."""

    name = "parsl-threads"

    def config(self):
        from parsl.config import Config
        from parsl.executors import ThreadPoolExecutor
        return Config(executors=[ThreadPoolExecutor(label="threads", max_threads=WORKERS)],
                      run_dir=RUN_DIR)


class Celeriac:
    """celeriac with its default config: embedded Redis + one Celery worker per core.

    The default gives 2 workers on the 2-core benchmark machines; on a bigger
    machine the comparison is no longer 2 vs 2 (the driver prints nproc).
    """

    name = "celeriac"
    python = sys.executable  # celeriac is installed where the driver runs

    def decorators(self):
        from celeriac import bash_app, python_app
        return python_app, bash_app

    def version(self):
        import celeriac
        return "celeriac " + str(getattr(celeriac, "__version__", "?"))

    @contextlib.contextmanager
    def load(self):
        import celeriac
        with celeriac.load() as dfk:
            yield dfk

    def settle(self, dfk, timeout: float = 60.0) -> None:
        """Wait until every worker of the default executor is connected (called before the
        warm-up of every workload but start-up, which has its own clock): worker start-up
        is paid before any clock starts, as the warm-up's tasks pay the rest. A worker
        still starting when a workload began took its first call 40-70 ms late, which the
        sleep workload counted against celeriac."""
        executor = next(e for e in dfk.executors.values() if hasattr(e, "_blocks"))

        def ready() -> int:  # the executor's own view of the workers serving its queue
            return sum(w.slots for w in executor._blocks.queue.workers() if w.ready)
        deadline = time.monotonic() + timeout
        while ready() < (os.cpu_count() or 1):
            if time.monotonic() > deadline:
                raise RuntimeError(f"celeriac's workers did not all connect in {timeout:.0f} s")
            time.sleep(0.02)


class CeleriacNoMonitoring(Celeriac):
    """celeriac's default config without its run database: what the database costs."""

    name = "celeriac-nomon"

    @contextlib.contextmanager
    def load(self):
        import celeriac
        with celeriac.load(celeriac.Config(monitoring=False)) as dfk:
            yield dfk


class CeleriacAmqp(Celeriac):
    """celeriac's default executor on RabbitMQ ($CELERIAC_BENCH_AMQP, default the test
    broker that tests/scripts/start_rabbitmq.sh starts) instead of the embedded Redis."""

    name = "celeriac-amqp"

    @contextlib.contextmanager
    def load(self):
        import celeriac
        url = os.environ.get("CELERIAC_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5699//")
        with celeriac.load(celeriac.Config(broker=url)) as dfk:
            yield dfk


class Plain:
    """No system: apps stay plain functions.

    Used when ``workloads`` is imported without $BENCHMARK_SYSTEM (say, by
    a worker started with a clean environment), so that importing it never
    fails and the names still refer to the functions themselves.
    """

    name = "plain"
    python = sys.executable

    def decorators(self):
        def ident(f=None, **_kw):
            return f if f is not None else (lambda g: g)
        return ident, ident


SYSTEMS = {s.name: s for s in (ParslHTEX(), ParslThreads(), peers.Ray(WORKERS),
                                peers.Dask(WORKERS), peers.ProcessPool(WORKERS), Celeriac(),
                                CeleriacNoMonitoring(), CeleriacAmqp())}
REFERENCE = "parsl-htex"


def get(name):
    """The adapter called ``name``; Plain for None/empty."""
    return SYSTEMS[name] if name else Plain()
