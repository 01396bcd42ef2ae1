"""Benchmark driver: celeriac side by side with its peers (see README.md).

    python benchmarks/run.py [--systems a,b|all] [--workloads a,b] [--rounds N] [--scale-n N]
    python benchmarks/run.py --memory 100000           # RSS soak, celeriac
    python benchmarks/run.py --child SYSTEM WORKLOAD   # one measurement (internal)

Every (system, workload) measurement runs in a fresh child process, with that
system's interpreter, so systems never share imports, threads or leftover
workers. The driver interleaves them (round-robin over systems, the order
rotated every round, R rounds) because these machines are shared and noisy:
only medians and ratios from one interleaved run mean anything. It ends with a
markdown table of the medians, each with its ratio to Parsl HTEX.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import traceback

import procs
import systems

HERE = os.path.dirname(os.path.abspath(__file__))
# column -> (heading, unit, format, workload, field, lower is better, ratio shown);
# field is "value" (the workload's figure) or one of the extra figures it returns.
COLUMNS = {
    "throughput": ("throughput", "tasks/s", "{:,.0f}", "throughput", "value", False, True),
    "chain": ("chain", "ms/hop", "{:.2f}", "chain", "value", True, True),
    "fan-in": ("fan-in", "tasks/s", "{:,.0f}", "fan-in", "value", False, True),
    "sleep": ("sleep", "efficiency", "{:.3f}", "sleep", "value", False, True),
    "bash": ("bash", "tasks/s", "{:,.0f}", "bash", "value", False, True),
    "bigdata": ("bigdata", "s", "{:.2f}", "bigdata", "value", True, True),
    "cold-start": ("cold start", "tasks/s", "{:,.0f}", "cold-start", "value", False, True),
    "startup": ("start-up", "s", "{:.2f}", "startup", "value", True, True),
    "scale": ("scale", "tasks/s", "{:,.0f}", "scale", "value", False, True),
    "scale/10k": ("scale / 10k", "ratio", "{:.2f}", "scale", "ratio_10k", False, False),
    "scale-rss": ("scale RSS", "MB", "{:,.0f}", "scale", "rss_mb", True, True),
    "rss": ("peak RSS", "MB", "{:,.0f}", None, "rss_mb", True, True),
}
WORKLOADS = list(dict.fromkeys(c[3] for c in COLUMNS.values() if c[3]))
# Their RSS says what the workload holds, not what the system costs: own columns or none.
NOT_IN_RSS = {"bigdata", "scale"}


# ---------------------------------------------------------------- child side

def emit(**fields):
    print(procs.MARK + json.dumps(fields), flush=True)


def peak_rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(system_name, workload, tasks):
    """Measure one workload on one system; exit 0 ok, 1 failed, 3 not available."""
    os.environ["BENCHMARK_SYSTEM"] = system_name
    # Workers the system starts inherit these: PYTHONPATH so they can import
    # `workloads` (and the working tree's celeriac, installed or not), PATH so
    # the system finds its own scripts (Parsl's HTEX runs `interchange.py` and
    # `process_worker_pool.py` from the venv's bin/).
    paths = [HERE, os.path.dirname(HERE)]
    sys.path[1:1] = paths[1:]  # HERE is already sys.path[0]
    for var, first in (("PYTHONPATH", os.pathsep.join(paths)),
                       ("PATH", os.path.dirname(sys.executable))):
        os.environ[var] = os.pathsep.join(filter(None, [first, os.environ.get(var)]))
    try:
        import workloads
        version = workloads.SYSTEM.version()
    except Exception as e:  # a missing or half-written system is "n/a", not a crash
        emit(status="n/a", error=f"import failed: {e!r}")
        return 3
    try:
        if workload == "startup":  # its own clock around load(): no warm-up first
            value = workloads.startup(workloads.SYSTEM.load)
            emit(status="ok", value=value, rss_mb=peak_rss_mb(), version=version)
            return 0
        with workloads.SYSTEM.load() as handle:
            getattr(workloads.SYSTEM, "settle", lambda _handle: None)(handle)
            workloads.warm_up()
            if workload == "memory":
                batch = max(1, min(10_000, tasks // 10))
                for done, rss in workloads.memory(tasks, batch):
                    # max(): Linux updates ru_maxrss lazily, it can lag behind statm.
                    emit(status="batch", done=done, rss_mb=rss, peak_mb=max(rss, peak_rss_mb()))
                value = workloads.current_rss_mb()
            elif workload == "scale" and tasks:
                value = workloads.scale(tasks)
            else:
                value = workloads.WORKLOADS[workload]()
            extra = {}
            if isinstance(value, dict):  # the figure plus extra figures
                extra, value = value, value.pop("value")
            # Emitted before shutdown so the figure is known even if shutdown hangs.
            emit(status="ok", value=value, rss_mb=peak_rss_mb(), version=version, extra=extra)
    except Exception as e:
        traceback.print_exc()
        emit(status="fail", error=f"{type(e).__name__}: {e}"[:300])
        return 1
    return 0


# --------------------------------------------------------------- driver side

def measure(system_name, workload, timeout, tasks=0, on_result=None):
    """Run one child and turn whatever happened into one record."""
    system = systems.SYSTEMS[system_name]
    rec = {"system": system_name, "workload": workload, "status": "fail", "value": None}
    if not os.path.exists(system.python):
        rec.update(status="n/a", error=f"{system.python} missing: run benchmarks/setup_peers.sh")
        return rec
    cmd = [system.python, os.path.abspath(__file__), "--child", system_name, workload,
           "--tasks", str(tasks)]
    run = procs.run_child(cmd, timeout, cwd=HERE, on_result=on_result)
    final = [r for r in run["results"] if r["status"] != "batch"]
    if final:
        rec.update(final[-1])
    rec["batches"] = [r for r in run["results"] if r["status"] == "batch"]
    problems = []
    if run["timed_out"]:
        problems.append(f"timed out after {timeout:.0f} s")
    elif run["returncode"] not in (0, 3):
        problems.append(f"exit code {run['returncode']}")
    if run["leftovers"]:
        problems.append(f"left {len(run['leftovers'])} processes behind: {run['leftovers'][:3]}")
    if problems and rec["status"] == "ok":
        # Only a clean run counts; the measured figure stays in the raw JSON.
        rec["status"] = "fail"
    if problems or rec["status"] == "fail":
        rec["error"] = "; ".join(filter(None, [rec.get("error")] + problems))
        rec["stderr_tail"] = run["stderr_tail"]
    return rec


def _field(rec, field):
    return rec["value"] if field == "value" else rec.get("extra", {}).get(field, rec.get(field))


def median_of(records, system, workload, field="value"):
    """(median, number of failed rounds) or (None, failures) if nothing succeeded;
    "n/a" if the system is not available."""
    if any(r["status"] == "n/a" for r in records if r["system"] == system):
        return "n/a", 0
    recs = [r for r in records if r["system"] == system and r["workload"] == workload]
    ok = [_field(r, field) for r in recs if r["status"] == "ok"]
    failed = len(recs) - len(ok)
    return (statistics.median(ok) if ok else None), failed


def rss_median(records, system, workloads):
    """The largest per-workload median of peak RSS: the submitting process's
    worst case across the workloads that ran (bigdata and scale aside)."""
    meds = []
    for w in workloads:
        if w in NOT_IN_RSS:
            continue
        ok = [r["rss_mb"] for r in records
              if r["system"] == system and r["workload"] == w and r["status"] == "ok"]
        if ok:
            meds.append(statistics.median(ok))
    return (max(meds) if meds else None), 0


def cell(value, failed, ref, fmt, with_ratio=True):
    if value == "n/a":
        return "n/a"
    if value is None:
        return "fail"
    text = fmt.format(value) + ("!" if failed else "")
    if with_ratio and isinstance(ref, (int, float)) and ref:
        text += f" ({value / ref:.2f}x)"
    return text


def table(records, system_names, workload_names):
    """A markdown table of the medians, each with its ratio to the reference."""
    columns = [c for c, spec in COLUMNS.items() if spec[3] in workload_names]
    if any(w not in NOT_IN_RSS for w in workload_names):
        columns.append("rss")
    medians = {}
    for s in system_names:
        m = medians[s] = {c: median_of(records, s, COLUMNS[c][3], COLUMNS[c][4])
                          for c in columns if c != "rss"}
        if "rss" in columns:
            m["rss"] = (rss_median(records, s, workload_names)
                        if any(v != "n/a" for v, _ in m.values()) else ("n/a", 0))
    ref = medians.get(systems.REFERENCE, {})
    heads = ["system"] + [f"{COLUMNS[c][0]} {COLUMNS[c][1]}" for c in columns]
    out = ["| " + " | ".join(heads) + " |", "|---" + "|---:" * len(columns) + "|"]
    for s in system_names:
        cells = [cell(*medians[s][c], ref.get(c, (None,))[0], COLUMNS[c][2], COLUMNS[c][6])
                 for c in columns]
        out.append("| " + " | ".join([s] + cells) + " |")
    lower = [COLUMNS[c][0] for c in columns if COLUMNS[c][5]]
    note = (f"Medians; (ratio to {systems.REFERENCE}); higher is better except "
            f"{', '.join(lower)}; ! = some rounds failed.")
    return "\n".join(out + ["", note]), {
        s: {c: v for c, (v, _) in m.items()} for s, m in medians.items()}


def header():
    return (f"date {datetime.datetime.now().isoformat(timespec='seconds')}   "
            f"machine: {platform.node()}, nproc={os.cpu_count()}, "
            f"python {platform.python_version()}")


def run_benchmarks(args):
    names, work = args.systems, args.workloads
    print(f"{header()}   rounds {args.rounds}", flush=True)
    records, unavailable = [], set()
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]  # rotate: no fixed slot
        for w in work:
            for s in order:
                if s in unavailable:
                    continue
                if w == "scale":  # allows for 200 tasks/s
                    rec = measure(s, w, args.timeout + args.scale_n / 200, tasks=args.scale_n)
                else:
                    rec = measure(s, w, args.timeout)
                rec["round"] = rnd + 1
                records.append(rec)
                shown = (COLUMNS[w][2].format(rec["value"]) if rec["status"] == "ok"
                         else rec["status"] + ": " + rec.get("error", ""))
                if rec.get("extra"):
                    shown += "  " + json.dumps(rec["extra"])
                print(f"  round {rnd + 1}  {s:<14} {w:<10} {shown}", file=sys.stderr, flush=True)
                for err_line in rec.get("stderr_tail", [])[-2:]:
                    print(f"      | {err_line}", file=sys.stderr)
                if rec["status"] == "n/a":
                    unavailable.add(s)
    text, medians = table(records, names, work)
    versions = sorted({r["version"] for r in records if r.get("version")})
    print(f"versions: {', '.join(versions) or '-'}")
    print(f"medians of {args.rounds} interleaved round(s); scale: {args.scale_n:,} no-ops\n")
    print(text)
    for s in sorted(unavailable):
        err = next(r.get("error") for r in records if r["system"] == s and r["status"] == "n/a")
        print(f"{s}: n/a ({err})")
    save({"date": datetime.datetime.now().isoformat(timespec="seconds"),
          "nproc": os.cpu_count(), "rounds": args.rounds, "systems": names,
          "workloads": work, "medians": medians, "records": records})


def run_memory(args):
    """Soak: N no-op tasks in batches, RSS after each; flat means finished tasks are freed."""
    print(header() + f"   memory soak: {args.memory} no-op tasks", flush=True)
    report = {}
    for s in args.systems:
        print(f"\n{s}:")
        show = lambda r: print(f"  {r['done']:>8} tasks   RSS {r['rss_mb']:7.1f} MB"  # noqa: E731
                               f"   peak {r['peak_mb']:7.1f} MB", flush=True)
        timeout = args.timeout + args.memory / 100  # allows for 100 tasks/s
        rec = measure(s, "memory", timeout, tasks=args.memory, on_result=lambda r: (
            show(r) if r["status"] == "batch" else None))
        b = rec["batches"]
        if rec["status"] != "ok" or len(b) < 2:
            print(f"  {rec['status']}: {rec.get('error', 'too few batches')}")
        else:
            growth = b[-1]["rss_mb"] - b[0]["rss_mb"]
            per_task = growth * 2**20 / (b[-1]["done"] - b[0]["done"])
            print(f"  growth after the first batch: {growth:+.1f} MB ({per_task:+.0f} bytes/task)")
        report[s] = rec
    save({"date": datetime.datetime.now().isoformat(timespec="seconds"),
          "nproc": os.cpu_count(), "memory_tasks": args.memory, "records": report},
         name="memory.json")


def save(data, name="latest.json"):
    path = os.path.join(HERE, "results", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(f"\nraw results: {os.path.relpath(path)}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", help=f"comma list from {','.join(systems.SYSTEMS)}, or all "
                   "(default all; --memory defaults to celeriac)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma list from {','.join(WORKLOADS)} (default all)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per child (default 300)")
    p.add_argument("--memory", type=int, metavar="N", help="RSS soak with N no-op tasks")
    p.add_argument("--scale-n", type=int, default=200_000, metavar="N",
                   help="no-ops in the scale workload (default 200,000; the target is 1,000,000)")
    p.add_argument("--child", nargs=2, metavar=("SYSTEM", "WORKLOAD"), help=argparse.SUPPRESS)
    p.add_argument("--tasks", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    default = "celeriac" if args.memory else ",".join(systems.SYSTEMS)
    args.systems = (default if args.systems in (None, "all") else args.systems).split(",")
    args.workloads = args.workloads.split(",")
    for kind, given, known in (("system", args.systems, systems.SYSTEMS),
                               ("workload", args.workloads, WORKLOADS)):
        bad = [x for x in given if x not in known]
        if bad:
            p.error(f"unknown {kind}(s) {bad}; choose from {list(known)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(*args.child, args.tasks)
    procs.become_subreaper()
    try:
        run_memory(args) if args.memory else run_benchmarks(args)
    finally:
        procs.sweep(grace=0)  # e.g. after Ctrl-C in the middle of a child
    return 0


if __name__ == "__main__":
    sys.exit(main())
