"""Does a long run stay as fast and as small as a short one? No-ops with futures dropped.

Submits ``--tasks`` no-op calls in windows of ``--window`` (at most that many futures held:
each window is waited for, then dropped), and prints the throughput and the orchestrator's
RSS every ``--every`` tasks. ``--trace`` also compares tracemalloc snapshots taken after the
first report and at the end, listing the allocation sites that grew (what a long run keeps).
Not a test: the figures are for reading, never for a pass/fail threshold.

    python benchmarks/scale_probe.py --tasks 1000000 --every 100000
    python benchmarks/scale_probe.py --tasks 200000 --every 50000 --trace
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import psutil  # noqa: E402

import celeriac  # noqa: E402
from celeriac import Config, python_app  # noqa: E402


@python_app
def noop():
    return None


def run(tasks: int, window: int, every: int, trace: bool, top: int) -> list:
    """Rows of (tasks done, tasks/s over the last ``every``, RSS MB, DFK task records)."""
    proc = psutil.Process()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            celeriac.load(Config(run_dir=os.path.join(tmp, "runinfo"))) as dfk:
        for f in [noop() for _ in range(200)]:  # warm up: workers, connections, packing
            f.result(timeout=120)
        done, t_last, snapshot = 0, time.perf_counter(), None
        print(f"{'tasks':>9} {'tasks/s':>9} {'RSS MB':>8} {'records':>8}", flush=True)
        while done < tasks:
            futures = [noop() for _ in range(min(window, tasks - done))]
            for f in futures:
                f.result(timeout=600)
            done += len(futures)
            del futures, f
            if done % every == 0 or done == tasks:
                now = time.perf_counter()
                rate = every / (now - t_last) if done % every == 0 else float("nan")
                t_last = now
                rss = proc.memory_info().rss / 2**20
                records = len(dfk._kernel.tasks)
                rows.append((done, rate, rss, records))
                print(f"{done:>9} {rate:>9.0f} {rss:>8.1f} {records:>8}", flush=True)
                if trace and snapshot is None:
                    gc.collect()
                    tracemalloc.start(4)
                    snapshot = tracemalloc.take_snapshot()
        if trace:
            gc.collect()
            stats = tracemalloc.take_snapshot().compare_to(snapshot, "traceback")
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
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    run(args.tasks, args.window, args.every, args.trace, args.top)


if __name__ == "__main__":
    main()
