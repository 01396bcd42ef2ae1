"""Does a long run stay as fast and as small as a short one? No-ops with futures dropped.

Submits ``--tasks`` no-op calls with at most ``--window`` in flight, each future dropped once
its result is in (as the ``scale`` workload of run.py does), after ``--short`` runs of 10,000
the same way. Prints, every ``--every`` tasks: the throughput over that slice, the
orchestrator's CPU per task, the calls per task message, the time spent in the cycle
collector per task, RSS and the DFK's task records. ``--trace`` also compares tracemalloc
snapshots taken after the first report and at the end, listing the allocation sites that grew
(what a long run keeps). Not a test: the figures are for reading, never for a pass/fail
threshold; on a shared machine compare the CPU per task more than the rates.

    python benchmarks/scale_probe.py --tasks 1000000 --every 50000
    python benchmarks/scale_probe.py --tasks 200000 --every 50000 --trace
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import statistics
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import psutil  # noqa: E402

import celeriac  # noqa: E402
from celeriac import Config, python_app  # noqa: E402


@python_app
def noop(x):
    return x


class Meter:
    """Rates and costs over a stretch of the run: tasks/s, orchestrator CPU per task, calls
    per message and cycle-collector time per task."""

    def __init__(self, link):
        self.proc, self.link = psutil.Process(), link
        self.in_gc, self._gc_start = 0.0, 0.0
        gc.callbacks.append(self._gc)
        self.mark()

    def _gc(self, phase, info):
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.in_gc += time.perf_counter() - self._gc_start

    def _cpu(self):
        t = self.proc.cpu_times()
        return t.user + t.system

    def mark(self):
        self.at = (time.perf_counter(), self._cpu(), self.link.stats["messages"], self.in_gc)

    def since(self, tasks: int) -> str:
        t0, c0, m0, g0 = self.at
        self.mark()
        t1, c1, m1, g1 = self.at
        return (f"{tasks / (t1 - t0):>9.0f} {(c1 - c0) / tasks * 1e6:>8.0f} "
                f"{tasks / max(1, m1 - m0):>9.1f} {(g1 - g0) / tasks * 1e6:>7.1f}")


HEADER = f"{'tasks':>9} {'tasks/s':>9} {'CPU us':>8} {'calls/msg':>9} {'GC us':>7}"


def bounded(n: int, window: int, meter: Meter, every: int = 0, report=None) -> float:
    """Run ``n`` no-ops, at most ``window`` in flight, dropping each future once its result
    is in; call ``report(done)`` every ``every`` tasks. Returns tasks/s."""
    t0 = time.perf_counter()
    flight = collections.deque()
    for i in range(n):
        if len(flight) >= window:
            j, f = flight.popleft()
            assert f.result(timeout=600) == j, "wrong result"
        flight.append((i, noop(i)))
        if every and (i + 1) % every == 0:
            report(i + 1)
    while flight:
        j, f = flight.popleft()
        assert f.result(timeout=600) == j, "wrong result"
    return n / (time.perf_counter() - t0)


def run(tasks: int, window: int, every: int, short: int, trace: bool, top: int) -> list:
    """Rows of (tasks done, tasks/s over the last ``every``, RSS MB, DFK task records)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            celeriac.load(Config(run_dir=os.path.join(tmp, "runinfo"))) as dfk:
        for f in [noop(i) for i in range(200)]:  # warm up: workers, connections, packing
            f.result(timeout=120)
        meter = Meter(dfk.executors["celery"]._link)
        print(f"{'short':>9} {HEADER[10:]}", flush=True)
        shorts = []
        for _ in range(short):
            meter.mark()
            shorts.append(bounded(10_000, window, meter))
            print(f"{10_000:>9} {meter.since(10_000)}", flush=True)
        snapshot = []

        def report(done):
            figures = meter.since(every)
            rss = meter.proc.memory_info().rss / 2**20
            records = len(dfk._kernel.tasks)
            rows.append((done, float(figures.split()[0]), rss, records))
            print(f"{done:>9} {figures} {rss:>8.1f} {records:>8}", flush=True)
            if trace and not snapshot:
                gc.collect()
                tracemalloc.start(4)
                snapshot.append(tracemalloc.take_snapshot())

        print(f"{HEADER} {'RSS MB':>8} {'records':>8}", flush=True)
        meter.mark()
        rate = bounded(tasks, window, meter, every, report)
        ratio = f", {rate / statistics.median(shorts):.2f}x the 10,000-task median" \
            if shorts else ""
        print(f"{tasks} tasks: {rate:.0f} tasks/s{ratio}", flush=True)
        if trace:
            gc.collect()
            stats = tracemalloc.take_snapshot().compare_to(snapshot[0], "traceback")
            tracemalloc.stop()
            print(f"grown since the first report: {sum(s.size_diff for s in stats) / 2**20:.1f}"
                  f" MB; top sites:")
            for s in stats[:top]:
                print(f"  {s.size_diff / 2**10:9.1f} KiB {s.count_diff:+8d} blocks")
                for line in s.traceback.format()[-8:]:
                    print(f"      {line}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=50_000)
    parser.add_argument("--short", type=int, default=3, help="10,000-task runs first")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    run(args.tasks, args.window, args.every, args.short, args.trace, args.top)


if __name__ == "__main__":
    main()
