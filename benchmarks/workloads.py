"""The five workloads of shared/BENCHMARKS.md, those of issue 14, and the memory soak.

The apps are defined at module level, decorated with the decorators of the
system named in $BENCHMARK_SYSTEM (set by ``run.py --child``), exactly as
a user would write them: each system then has to ship them the way it ships any
user's apps (Parsl's dill pickles them by value, with this module's globals by
reference, which is why the child puts benchmarks/ on PYTHONPATH).

Each workload returns its figure (or a dict with ``value`` and extra figures).
Timing runs from the first submit to the last result; load and warm-up are
outside it, except in ``startup``, which the child runs on its own path.
Results are checked, so a system that returns wrong answers fails rather than
looking fast.
"""
import os
import time

import systems

SYSTEM = systems.get(os.environ.get("BENCHMARK_SYSTEM"))
python_app, bash_app = SYSTEM.decorators()


@python_app
def noop(x):
    return x


@python_app
def add1(x):
    return x + 1


@python_app
def total(inputs=()):
    return sum(inputs)


@python_app
def sleep_app(seconds=0.05):
    import time
    time.sleep(seconds)
    return seconds


@bash_app
def echo_hi():
    return "echo hi"


@python_app
def cold_noop(x):
    """Never called in warm-up: what the first calls of a new app cost."""
    return x


@python_app
def checksum(data, i):
    """Small proof that the whole big argument arrived: its size and a strided sample."""
    view = memoryview(data).cast("B")
    return i, view.nbytes, sum(view[::STRIDE])


@python_app
def block(i, nbytes):
    """A big result: ``nbytes`` bytes, every byte ``i`` (numpy if the worker has it)."""
    try:
        import numpy
        return numpy.full(nbytes, i, dtype=numpy.uint8)
    except ImportError:
        return bytes([i]) * nbytes


def warm_up():
    """A few tasks of each kind, so that connections, imports and worker start-up
    are paid before the clock starts."""
    assert [f.result() for f in [noop(i) for i in range(4)]] == [0, 1, 2, 3]
    assert echo_hi().result() == 0


def throughput(n=5000):
    """tasks/s: n no-op tasks submitted at once, wait for all."""
    t0 = time.perf_counter()
    futs = [noop(i) for i in range(n)]
    results = [f.result() for f in futs]
    dt = time.perf_counter() - t0
    assert results == list(range(n)), "wrong results"
    return n / dt


def chain(n=500):
    """ms per hop: n dependent tasks, each taking the previous future."""
    t0 = time.perf_counter()
    fut = add1(0)
    for _ in range(n - 1):
        fut = add1(fut)
    result = fut.result()
    dt = time.perf_counter() - t0
    assert result == n, f"chain gave {result}, expected {n}"
    return dt * 1000 / n


def fan_in(n=2000):
    """tasks/s: n no-op tasks, then one taking all their futures (n + 1 tasks)."""
    t0 = time.perf_counter()
    futs = [noop(i) for i in range(n)]
    result = total(inputs=futs).result()
    dt = time.perf_counter() - t0
    assert result == n * (n - 1) // 2, "wrong fan-in sum"
    return (n + 1) / dt


def sleep(n=200, seconds=0.05, workers=systems.WORKERS):
    """efficiency: ideal time (n * seconds / workers) over actual time."""
    t0 = time.perf_counter()
    futs = [sleep_app(seconds) for _ in range(n)]
    for f in futs:
        f.result()
    dt = time.perf_counter() - t0
    return n * seconds / workers / dt


def bash(n=500):
    """tasks/s: n bash apps running `echo hi` (the figure includes fork/exec)."""
    t0 = time.perf_counter()
    futs = [echo_hi() for _ in range(n)]
    codes = [f.result() for f in futs]
    dt = time.perf_counter() - t0
    assert codes == [0] * n, "a bash app failed"
    return n / dt


STRIDE = 65536


def big_array(nbytes):
    """``nbytes`` of varied content: a numpy array if numpy is here, else bytes."""
    try:
        import numpy
        return numpy.arange(nbytes // 8, dtype=numpy.int64), "numpy"
    except ImportError:
        return bytes(i % 251 for i in range(256)) * (nbytes // 256), "bytes"


def bigdata(in_mb=200, n=8, out_mb=50):
    """seconds: one in_mb array passed to n tasks (each returns a checksum), then
    n tasks each returning out_mb; both results are checked."""
    data, kind = big_array(in_mb * 2**20)
    view = memoryview(data).cast("B")
    expected = (view.nbytes, sum(view[::STRIDE]))
    t0 = time.perf_counter()
    sums = [f.result() for f in [checksum(data, i) for i in range(n)]]
    t1 = time.perf_counter()
    assert sums == [(i, *expected) for i in range(n)], "a checksum of the big argument is wrong"
    nbytes = out_mb * 2**20
    for i, f in enumerate([block(i, nbytes) for i in range(n)]):
        out = memoryview(f.result()).cast("B")
        assert out.nbytes == nbytes and out[0] == out[-1] == out[nbytes // 2] == i, \
            f"big result {i} is wrong"
        del out
    t2 = time.perf_counter()
    return {"value": t2 - t0, "in_s": t1 - t0, "out_s": t2 - t1, "kind": kind}


def cold_start(n=10_000):
    """tasks/s: the first n calls of an app never run before (in this process or
    its workers), submitted at once."""
    t0 = time.perf_counter()
    futs = [cold_noop(i) for i in range(n)]
    results = [f.result() for f in futs]
    dt = time.perf_counter() - t0
    assert results == list(range(n)), "wrong results"
    return n / dt


def startup(load):
    """seconds from before ``load()`` to the first result of one no-op (the system's
    imports are done; its start-up, workers included, is not). Not after warm-up:
    the child calls this instead of loading the system itself."""
    t0 = time.perf_counter()
    with load():
        assert noop(7).result() == 7
        dt = time.perf_counter() - t0
    return dt


def _bounded_noops(n, window):
    """Run n no-ops with at most ``window`` in flight, dropping each future once
    its result is in; returns tasks/s."""
    import collections
    t0 = time.perf_counter()
    flight = collections.deque()
    for i in range(n):
        if len(flight) >= window:
            j, f = flight.popleft()
            assert f.result() == j, "wrong result"
        flight.append((i, noop(i)))
    while flight:
        j, f = flight.popleft()
        assert f.result() == j, "wrong result"
    return n / (time.perf_counter() - t0)


def scale(n=200_000, window=10_000):
    """tasks/s of n no-ops (at most ``window`` in flight, futures dropped as they
    finish), its ratio to 10,000-task runs the same way (the median of three: one
    run lasts about a second, so a single one on a shared machine swung the ratio
    from 0.9 to 2.2 between two runs of the same code), and the submitting
    process's peak RSS (MB)."""
    import resource
    import statistics
    small = statistics.median(_bounded_noops(10_000, window) for _ in range(3))
    big = _bounded_noops(n, window)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"value": big, "n": n, "tasks_10k": small, "ratio_10k": big / small, "rss_mb": rss}


WORKLOADS = {"throughput": throughput, "chain": chain, "fan-in": fan_in,
             "sleep": sleep, "bash": bash, "bigdata": bigdata, "cold-start": cold_start,
             "startup": startup, "scale": scale}


def current_rss_mb():
    """Resident set size now (not the peak), from /proc: the figure that must
    stay flat while finished tasks are forgotten."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory(n, batch):
    """Run n no-op tasks in batches; yield (tasks done, RSS MB) after each batch.

    The futures of a batch are dropped before measuring, as a long-running
    workflow would drop them, so growth here is what the system itself keeps.
    """
    import gc
    done = 0
    while done < n:
        k = min(batch, n - done)
        futs = [noop(i) for i in range(k)]
        for f in futs:
            f.result()
        del futs
        gc.collect()
        done += k
        yield done, current_rss_mb()
