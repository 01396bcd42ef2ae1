"""The five workloads of shared/BENCHMARKS.md, plus the memory soak.

The apps are defined at module level, decorated with the decorators of the
system named in $BENCHMARK_SYSTEM (set by ``run.py --child``), exactly as
a user would write them: each system then has to ship them the way it ships any
user's apps (Parsl's dill pickles them by value, with this module's globals by
reference, which is why the child puts benchmarks/ on PYTHONPATH).

Each workload returns its figure. Timing runs from the first submit to the last
result; load and warm-up are outside it. Results are checked, so a system that
returns wrong answers fails rather than looking fast.
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
def noop_cold(x):
    """The same as noop, but never run by warm_up: its first burst is its first call."""
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


def cold(n=10000):
    """tasks/s: the first n calls of an app never run before (compare with throughput)."""
    t0 = time.perf_counter()
    futs = [noop_cold(i) for i in range(n)]
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


WORKLOADS = {"throughput": throughput, "chain": chain, "fan-in": fan_in,
             "sleep": sleep, "bash": bash, "cold": cold}


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
