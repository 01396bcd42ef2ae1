"""What a finished AppFuture costs while the user still holds it, measured with tracemalloc.

Runs N no-op tasks (returning None, so the result itself costs nothing), keeps every future,
waits for all of them, collects garbage, and reports the bytes still allocated per held
future, with the allocation sites that hold the most (what a finished future keeps alive).
Not a test: the figure is for reading, never for a pass/fail threshold.

    python benchmarks/held_futures.py --executor threads --tasks 100000
    python benchmarks/held_futures.py --executor celery --tasks 100000   # embedded default
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


def _config(executor: str, run_dir: str) -> Config:
    if executor == "threads":
        from celeriac.executors import ThreadPoolExecutor
        return Config([ThreadPoolExecutor(label="threads", max_threads=2)], run_dir=run_dir)
    return Config(run_dir=run_dir)  # the embedded default: Redis + one worker per core


def measure(executor: str, tasks: int, top: int, trace: bool = True) -> dict:
    """Bytes still allocated per held finished future, and the top allocation sites
    (``trace=False``: RSS growth only, without tracemalloc's own overhead)."""
    with tempfile.TemporaryDirectory() as tmp, \
            celeriac.load(_config(executor, os.path.join(tmp, "runinfo"))):
        for f in [noop() for _ in range(200)]:  # warm up: imports, connections, workers
            f.result(timeout=120)
        gc.collect()
        rss0 = psutil.Process().memory_info().rss
        if trace:
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
        t0 = time.perf_counter()
        held = [noop() for _ in range(tasks)]
        for f in held:
            f.result(timeout=600)
        elapsed = time.perf_counter() - t0
        time.sleep(1)  # let the last callbacks and the sender's batches finish
        gc.collect()
        rss1 = psutil.Process().memory_info().rss
        stats = []
        if trace:
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            stats = after.compare_to(before, "lineno")
        grown = sum(s.size_diff for s in stats)
        sites = [(s.size_diff / tasks, str(s.traceback[0])) for s in stats[:top]]
        assert len(held) == tasks
    return {"executor": executor, "tasks": tasks, "bytes_per_future": grown / tasks,
            "rss_mb": (rss1 - rss0) / 2**20, "seconds": elapsed, "sites": sites}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", choices=["threads", "celery"], default="threads")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=12, help="allocation sites to show")
    parser.add_argument("--rss-only", action="store_true",
                        help="no tracemalloc: RSS growth per held future only")
    args = parser.parse_args()
    r = measure(args.executor, args.tasks, args.top, trace=not args.rss_only)
    if args.rss_only:
        print(f"{r['executor']}: {r['tasks']} held finished futures: RSS +{r['rss_mb']:.0f} MB "
              f"({r['rss_mb'] * 2**20 / r['tasks']:.0f} bytes each), {r['seconds']:.1f} s")
        return
    print(f"{r['executor']}: {r['tasks']} held finished futures: "
          f"{r['bytes_per_future']:.0f} bytes each (tracemalloc), RSS +{r['rss_mb']:.0f} MB, "
          f"{r['seconds']:.1f} s under tracemalloc")
    for per_task, where in r["sites"]:
        print(f"  {per_task:8.1f} B/future  {where}")


if __name__ == "__main__":
    main()
