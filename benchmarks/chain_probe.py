"""A/B probe of the chain hop (and the workloads a change to the hop could slow) between trees.

Run from the repository root::

    python benchmarks/chain_probe.py --trees /tmp/base,. --rounds 5 [--hops 2000]
        [--workloads chain,throughput,fan-in,bash]

Each round runs every tree once, in a fresh child process with that tree's ``celeriac`` first
on the import path (its workers inherit the path), the trees' order rotated every round, so a
busy neighbour on a shared machine slows both alike. The child loads the default config (embedded
Redis, one worker per core), warms up, and measures each workload once. Medians per tree and
their ratio to the first tree are printed, and the median of the per-round ratios (each
round's figures were measured under the same load). Figures are for people, never test assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MARK = "@@probe "


def child(root: str, hops: int, workloads: list[str]) -> None:
    sys.path.insert(0, os.path.abspath(root))
    import celeriac
    from celeriac import bash_app, python_app

    @python_app
    def add1(x):
        return x + 1

    @python_app
    def total(inputs=()):
        return sum(inputs)

    @bash_app
    def echo_hi():
        return "echo hi"

    figures = {"where": os.path.dirname(celeriac.__file__)}
    with celeriac.load():
        assert [f.result() for f in [add1(i) for i in range(8)]] == list(range(1, 9))
        assert echo_hi().result() == 0
        fut = add1(0)  # warm: the app's run time is known, connections open
        for _ in range(49):
            fut = add1(fut)
        assert fut.result() == 50
        for workload in workloads:
            t0 = time.perf_counter()
            if workload == "chain":
                fut = add1(0)
                for _ in range(hops - 1):
                    fut = add1(fut)
                assert fut.result() == hops
                figures[workload] = (time.perf_counter() - t0) * 1000 / hops
            elif workload == "throughput":
                futs = [add1(i) for i in range(5000)]
                assert [f.result() for f in futs] == list(range(1, 5001))
                figures[workload] = 5000 / (time.perf_counter() - t0)
            elif workload == "fan-in":
                futs = [add1(i) for i in range(2000)]
                assert total(inputs=futs).result() == 2000 * 2001 // 2
                figures[workload] = 2001 / (time.perf_counter() - t0)
            elif workload == "bash":
                futs = [echo_hi() for _ in range(500)]
                assert [f.result() for f in futs] == [0] * 500
                figures[workload] = 500 / (time.perf_counter() - t0)
            else:
                raise SystemExit(f"unknown workload {workload!r}")
    print(MARK + json.dumps(figures), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", default=".", help="comma list of checkouts to compare")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hops", type=int, default=2000)
    parser.add_argument("--workloads", default="chain")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workloads = args.workloads.split(",")
    if args.child:
        child(args.child, args.hops, workloads)
        return
    trees = args.trees.split(",")
    results = {t: {w: [] for w in workloads} for t in trees}
    for r in range(args.rounds):
        order = trees[r % len(trees):] + trees[:r % len(trees)]
        for tree in order:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", tree, "--hops",
                 str(args.hops), "--workloads", args.workloads],
                capture_output=True, text=True, timeout=600, cwd="/tmp")
            line = [x for x in out.stdout.splitlines() if x.startswith(MARK)]
            if not line:
                print(f"{tree}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            figures = json.loads(line[0][len(MARK):])
            for w in workloads:
                results[tree][w].append(figures[w])
            print(f"round {r + 1} {tree}: " + ", ".join(
                f"{w} {figures[w]:.3f}" for w in workloads), flush=True)
    base = trees[0]
    for w in workloads:
        for tree in trees:
            vals = results[tree][w]
            if not vals:
                continue
            med = statistics.median(vals)
            ratio = med / statistics.median(results[base][w]) if results[base][w] else float("nan")
            paired = [v / b for v, b in zip(vals, results[base][w])]  # same round: same load
            print(f"{w:10s} {tree:30s} median {med:10.3f}  ratio {ratio:.3f}  median of "
                  f"per-round ratios {statistics.median(paired):.3f}  "
                  f"({', '.join(f'{v:.3f}' for v in vals)})")


if __name__ == "__main__":
    main()
