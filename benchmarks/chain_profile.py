"""Where a chain hop's time goes, now that a chain's steps travel together.

    python benchmarks/chain_profile.py [--hops 5000] [--rounds 3] [--py-spy]

Runs the default config (embedded Redis, one solo worker per core) and times a chain of
``--hops`` steps of ``add1`` in two phases: submitting every step while the first waits on a
plain future (the user's thread: app call, task record, kernel, watch), then running them
(send, worker, outcomes, futures, dependents). Prints wall and CPU per hop for each phase:
the orchestrator (all its threads), the workers, Redis. With ``--py-spy`` it samples the
orchestrator and one worker during the run phase and prints their busiest functions (own
time) per hop. The chain workload of run.py overlaps the two phases (a step runs while later
ones are still submitted), so its hop is about the larger of the two, not their sum.
Figures for people, never test assertions.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import psutil  # noqa: E402

import celeriac  # noqa: E402
from celeriac import python_app  # noqa: E402


@python_app
def add1(x):
    return x + 1


def cpu(procs) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def sample(pid: int, seconds: float, out: str):
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-r", "2000", "-d",
                             str(max(1, round(seconds))), "-f", "raw", "-o", out,
                             "--nonblocking", "--gil"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def busiest(path: str, hops: int, seconds: float, top: int = 12) -> list:
    """(us per hop, function) of the frames at the top of the stacks py-spy sampled."""
    own = collections.Counter()
    samples = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            # --gil: only the thread holding the GIL is sampled, so waits are not counted
            own[frames[-1].split(" (")[0].strip()] += int(count)
            samples += int(count)
    if not samples:
        return []
    per_sample = seconds / samples * 1e6 / hops
    return [(n * per_sample, name) for name, n in own.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hops", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--py-spy", action="store_true")
    args = parser.parse_args()
    me = psutil.Process()
    with celeriac.load():
        fut = add1(0)
        for _ in range(199):
            fut = add1(fut)
        assert fut.result() == 200  # warm: run time known, workers connected
        kids = [p for p in me.children(recursive=True)]
        redis = [p for p in kids if "redis" in p.name()]
        workers = sorted((p for p in kids if p not in redis), key=lambda p: -cpu([p]))
        workers = [p for p in workers if cpu([p]) > cpu(workers[:1]) / 4]  # not supervisors
        for r in range(args.rounds):
            gate = Future()
            c0, t0 = cpu([me]), time.perf_counter()
            fut = add1(gate)
            for _ in range(args.hops - 1):
                fut = add1(fut)
            t1, c1 = time.perf_counter(), cpu([me])
            w1, r1 = cpu(workers), cpu(redis)
            spies = []
            if args.py_spy and r == args.rounds - 1:
                guess = (t1 - t0) * 1.5
                tmp = tempfile.mkdtemp()
                spies = [(sample(me.pid, guess, f"{tmp}/orch.txt"), f"{tmp}/orch.txt"),
                         (sample(workers[0].pid, guess, f"{tmp}/worker.txt"),
                          f"{tmp}/worker.txt")]
                time.sleep(0.5)  # py-spy attaches
            t2 = time.perf_counter()
            gate.set_result(0)
            assert fut.result() == args.hops
            t3 = time.perf_counter()
            c3, w3, r3 = cpu([me]), cpu(workers), cpu(redis)
            us = 1e6 / args.hops
            print(f"round {r + 1}: submit {us * (t1 - t0):.1f} us/hop wall, "
                  f"{us * (c1 - c0):.1f} CPU | run {us * (t3 - t2):.1f} us/hop wall; CPU: "
                  f"orchestrator {us * (c3 - c1):.1f}, workers {us * (w3 - w1):.1f}, "
                  f"redis {us * (r3 - r1):.1f}")
            for proc, path in spies:
                proc.wait(60)
                print(f"  busiest in {os.path.basename(path)} (us per hop, own time):")
                for t, name in busiest(path, args.hops, t3 - t2):
                    print(f"    {t:6.1f}  {name}")


if __name__ == "__main__":
    main()
