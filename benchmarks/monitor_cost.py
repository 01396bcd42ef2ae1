"""What the run database costs in CPU: seconds per task of the orchestrator and of the writer.

Throughput on a shared 2-core machine is noisy; CPU time is steadier (the least of the rounds
most of all: contention only adds to it). This runs N no-op
tasks with the default config, with the run database on and off, each in a fresh child,
alternating, and prints per run the orchestrator's CPU (user + system, all its threads, from
the first submit to the end of ``cleanup()``) and the writer process's CPU (from its
``wait4`` rusage, so nothing it did is missed), both in microseconds per task::

    python benchmarks/monitor_cost.py                 # 20,000 tasks, 3 rounds
    python benchmarks/monitor_cost.py --tasks 5000 --rounds 5
    python benchmarks/monitor_cost.py --synthetic     # the database alone, no broker/workers

The difference of the orchestrator's figure between "on" and "off", plus the writer's, is
what the database takes from a run's CPU (on 2 cores, from the workers too). A figure here is
never a test: the machine is shared.

``--synthetic`` feeds a bare run database (no broker, no workers) the observer calls of a run of
plain tasks arriving at 10,000 tasks/s, the way the kernel and the link make them, and splits
the cost into the observer calls (the DFK's threads), the rest of the orchestrator (the feeder
thread) and the writer: far less noisy than a real run, and what a change to the database moves.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MARK = "MONITOR-COST "


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _thread_cpu(native_id: int, where: str = "self/task") -> float:
    """CPU seconds of one thread of this process (or, with where="", of a process), from
    /proc (0 once it has ended)."""
    try:
        with open(f"/proc/{where}/{native_id}/stat".replace("//", "/")) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(monitoring: bool, tasks: int) -> dict:
    """One run in this process; returns its figures."""
    sys.path.insert(0, ROOT)
    import celeriac
    from celeriac import python_app

    @python_app
    def noop(x):
        return x

    writer = {}
    dfk = celeriac.load(celeriac.Config(monitoring=monitoring))
    try:
        assert [f.result() for f in [noop(i) for i in range(8)]] == list(range(8))
        database = dfk.monitoring
        if database is not None:  # take the writer's rusage when it is reaped
            proc = database._writer

            def wait(timeout=None):
                if proc.returncode is None:
                    _pid, status, ru = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    writer["cpu"] = ru.ru_utime + ru.ru_stime
                return proc.returncode
            proc.wait = wait
            feeder = database._thread.native_id
            feeder0 = _thread_cpu(feeder)
        cpu0, t0 = _cpu(), time.perf_counter()
        futures = [noop(i) for i in range(tasks)]
        assert [f.result() for f in futures] == list(range(tasks))
        wall = time.perf_counter() - t0
        cpu_run = _cpu() - cpu0
        if database is not None:
            writer["feeder"] = _thread_cpu(feeder) - feeder0
            writer["during"] = _thread_cpu(proc.pid, "")
    finally:
        dfk.cleanup()
        celeriac.clear()
    cpu_all = _cpu() - cpu0
    wall_all = time.perf_counter() - t0
    return {"monitoring": monitoring, "tasks": tasks, "wall": wall,
            "rate": tasks / wall, "rate_with_cleanup": tasks / wall_all,
            "orchestrator_us": 1e6 * cpu_run / tasks,
            "orchestrator_with_cleanup_us": 1e6 * cpu_all / tasks,
            "writer_us": 1e6 * writer["cpu"] / tasks if "cpu" in writer else None,
            "feeder_us": 1e6 * writer["feeder"] / tasks if "feeder" in writer else None,
            "writer_during_us": 1e6 * writer["during"] / tasks if "during" in writer else None,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def synthetic(tasks: int, rate: float = 10_000, chunk: int = 100, lag: int = 5) -> dict:
    """The database alone, fed a run of plain tasks; returns its figures (see the doc)."""
    import tempfile
    sys.path.insert(0, ROOT)
    from celeriac.orchestrator.monitoring import RunDatabase
    from celeriac.orchestrator.states import States, TaskRecord

    with tempfile.TemporaryDirectory() as run_dir:
        cpu0 = _cpu()
        database = RunDatabase(run_dir, "synthetic")
        writer = {}
        proc = database._writer

        def wait(timeout=None):
            if proc.returncode is None:
                _pid, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                writer["cpu"] = ru.ru_utime + ru.ru_stime
            return proc.returncode
        proc.wait = wait
        counts = {States.pending: 0, States.launched: 0, States.exec_done: 0}
        database.state_counts = lambda: counts
        records, hot, other, t0 = [], 0.0, 0.0, time.perf_counter()
        longest = 0  # the most rows ever queued in the orchestrator
        for start in range(0, tasks + lag * chunk, chunk):
            # the records and their moves are the kernel's work: counted apart (``other``)
            h0 = time.thread_time()
            new = [TaskRecord(i, None, "noop", "python", (), {}, "celery")
                   for i in range(start, min(start + chunk, tasks))]
            for record in new:
                record.move(States.launched)
                record.try_id = 1
            records.append(new)  # finished ``lag`` chunks later, then dropped as the DFK does
            done = records.pop(0) if len(records) > lag else []
            for record in done:
                record.move(States.exec_done)
            h1 = time.thread_time()
            for record in new:
                database.submitted(record)
                database.moved(record, States.pending, States.launched, None)
            if done:
                database.ran_on([f"synthetic.{r.id}.1" for r in done], "celery@host")
                for record in done:
                    database.moved(record, States.launched, States.exec_done, None)
            h2 = time.thread_time()
            hot += h2 - h1
            other += h1 - h0
            longest = max(longest, len(database._rows))
            pause = t0 + (start + chunk) / rate - time.perf_counter() if rate else 0
            if pause > 0:
                time.sleep(pause)
        database.close()
        cpu = _cpu() - cpu0
        import sqlite3
        conn = sqlite3.connect(database.path)
        rows = conn.execute("SELECT count(*) FROM tasks WHERE state = 'exec_done'").fetchone()[0]
        conn.close()
    assert rows == tasks, (rows, tasks)
    return {"tasks": tasks, "observer_us": 1e6 * hot / tasks,
            "feeder_us": 1e6 * (cpu - hot - other) / tasks,
            "writer_us": 1e6 * writer["cpu"] / tasks,
            "longest_queue": longest, "wall": time.perf_counter() - t0,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true",
                        help="the database alone, without broker or workers")
    parser.add_argument("--rate", type=float, default=10_000,
                        help="with --synthetic: tasks per second fed (0: as fast as it goes)")
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.synthetic:
        for r in range(args.rounds):
            res = synthetic(args.tasks, args.rate)
            print(f"round {r}: observer calls {res['observer_us']:.2f} us/task, rest of the "
                  f"orchestrator {res['feeder_us']:.2f}, writer {res['writer_us']:.2f} us/task, "
                  f"rss {res['maxrss_mb']:.0f} MB, at most {res['longest_queue']} rows queued, "
                  f"{res['wall']:.1f} s", flush=True)
        return
    if args.child:
        print(MARK + json.dumps(child(args.child == "on", args.tasks)), flush=True)
        return
    results = {"on": [], "off": []}
    for r in range(args.rounds):
        for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--tasks",
                                  str(args.tasks)], capture_output=True, text=True,
                                 timeout=900, cwd=ROOT)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith(MARK)]
            if not lines:
                print(f"round {r} {mode}: failed\n{out.stderr[-2000:]}")
                continue
            res = json.loads(lines[-1][len(MARK):])
            results[mode].append(res)
            writer, feeder = res["writer_us"], res["feeder_us"]
            print(f"round {r} monitoring {mode:3}: {res['rate']:6.0f} tasks/s "
                  f"({res['rate_with_cleanup']:6.0f} with cleanup), orchestrator "
                  f"{res['orchestrator_us']:6.1f} us/task "
                  f"({res['orchestrator_with_cleanup_us']:6.1f} with cleanup; feeder thread "
                  f"{'-' if feeder is None else f'{feeder:4.1f}'}), writer "
                  f"{'-' if writer is None else f'{writer:5.1f}'} us/task "
                  f"({res['writer_during_us'] or 0:.1f} of it before the last result), "
                  f"rss {res['maxrss_mb']:.0f} MB", flush=True)
    if results["on"] and results["off"]:
        def extra(key):
            return (statistics.median(r[key] for r in results["on"])
                    - statistics.median(r[key] for r in results["off"]))

        def med(key):
            return statistics.median(r[key] for r in results["on"])
        print(f"medians, on minus off: orchestrator {extra('orchestrator_us'):+.1f} us/task "
              f"({extra('orchestrator_with_cleanup_us'):+.1f} with cleanup); with it on: "
              f"feeder thread {med('feeder_us'):.1f}, writer {med('writer_us'):.1f} us/task; "
              f"rate {extra('rate'):+.0f} tasks/s ({extra('rate_with_cleanup'):+.0f} with "
              f"cleanup)")
        # contention only ever adds CPU time: the least of the rounds is the steadiest figure
        least = {mode: min(r["orchestrator_us"] for r in results[mode]) for mode in results}
        print(f"least of the rounds: orchestrator {least['on']:.1f} us/task on, "
              f"{least['off']:.1f} off ({least['on'] - least['off']:+.1f}); writer "
              f"{min(r['writer_us'] for r in results['on']):.1f} us/task")


if __name__ == "__main__":
    main()
