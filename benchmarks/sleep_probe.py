"""Where the sleep workload's time goes: per call, which worker ran it and when it started
and ended, summed into the budget of the time lost against the ideal.

    python benchmarks/sleep_probe.py [rounds]

Runs celeriac's default config (embedded Redis, one solo worker per core) like
``run.py --workloads sleep``: a warm-up of no-ops, then 200 calls of a 50 ms app never
run before, submitted at once. For each worker it prints when its first call started,
the gaps between its calls (its per-message cost, and any wait for work), how much the
sleeps overran, and how long it sat idle at the end while the other still ran.
"""
import os
import sys
import time

import systems

import celeriac
from celeriac import python_app

CALLS, SECONDS = 200, 0.05


@python_app
def noop(x):
    return x


@python_app
def timed_sleep(seconds):
    import os
    import time
    started = time.time()
    time.sleep(seconds)
    return os.getpid(), started, time.time()


def budget(t0: float, t1: float, outcomes, workers: int) -> str:
    ideal = CALLS * SECONDS / workers
    lines = [f"efficiency {ideal / (t1 - t0):.4f}: {t1 - t0:.3f} s for an ideal {ideal:.3f} s, "
             f"{1000 * (t1 - t0 - ideal):.0f} ms lost"]
    last_end = max(end for _pid, _start, end in outcomes)
    lines.append(f"  first call started {1000 * (min(s for _p, s, _e in outcomes) - t0):.1f} ms "
                 f"after the submit; last result in {1000 * (t1 - last_end):.1f} ms after "
                 "the last call ended")
    by_worker: dict = {}
    for pid, start, end in outcomes:
        by_worker.setdefault(pid, []).append((start, end))
    for pid, calls in sorted(by_worker.items()):
        calls.sort()
        gaps = [calls[i + 1][0] - calls[i][1] for i in range(len(calls) - 1)]
        between = [g for g in gaps if g > 0.0003]  # between messages, not calls of one
        lines.append(
            f"  worker {pid}: {len(calls)} calls, first at +{1000 * (calls[0][0] - t0):.1f} ms,"
            f" gaps {1000 * sum(gaps):.1f} ms ({len(between)} over 0.3 ms, mean "
            f"{1000 * sum(between) / max(1, len(between)):.2f} ms), sleeps overran "
            f"{1000 * sum(e - s - SECONDS for s, e in calls):.1f} ms, idle at the end "
            f"{1000 * (last_end - calls[-1][1]):.1f} ms")
    return "\n".join(lines)


def main(rounds: int = 1) -> None:
    workers = os.cpu_count() or 1
    with celeriac.load() as dfk:
        systems.Celeriac().settle(dfk)  # every worker connected, as run.py waits
        assert [f.result() for f in [noop(i) for i in range(4)]] == [0, 1, 2, 3]
        for _ in range(rounds):  # only the first round's app is new to the run
            t0 = time.time()
            futures = [timed_sleep(SECONDS) for _ in range(CALLS)]
            outcomes = [f.result() for f in futures]
            print(budget(t0, time.time(), outcomes, workers), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
