"""Where the time from ``celeriac.load()`` to the first result goes, phase by phase.

Run from the repository root: ``python benchmarks/startup_probe.py [--runs 5]``. It times the
orchestrator's phases by wrapping the functions that carry them out (run directory, embedded
Redis, the Celery link, block spawn, the first task) and the workers' phases from inside the
worker processes: a ``sitecustomize`` put on the workers' import path records, per process,
when the interpreter started, when it began importing Celery, when the Celery worker was
ready and when it ran its first task. Medians over the runs are printed; ``--json`` writes
every run. Timings are measurements for people, never test assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)  # this checkout's celeriac

# Written into a temporary directory on the workers' PYTHONPATH: every Python process the
# run starts (the `celeriac worker` supervisor and its Celery workers) appends one JSON line
# per event to $CELERIAC_PROBE_TRACE.
SITECUSTOMIZE = r'''
import os, sys, time, json
_T0 = time.time()
_TRACE = os.environ.get("CELERIAC_PROBE_TRACE")

def _emit(event, t=None):
    role = "child" if "--child" in sys.argv else "supervisor"
    line = json.dumps({"pid": os.getpid(), "role": role, "event": event,
                       "t": time.time() if t is None else t, "cpu": time.process_time(),
                       "modules": len(sys.modules)})
    with open(_TRACE, "a") as fh:
        fh.write(line + "\n")

_ARGV = getattr(sys, "orig_argv", sys.argv)
if _TRACE and "celeriac" in _ARGV and "worker" in _ARGV:  # python -m celeriac worker ...
    _emit("site", _T0)
    _state = {"celery": False, "hooked": False, "spawned": False}

    def _hook(event, args):
        if event == "subprocess.Popen" and not _state["spawned"]:
            _state["spawned"] = True
            _emit("spawn")
        if event != "import":
            return
        name = args[0]
        if not _state["celery"] and (name == "celery" or name.startswith("celery.")):
            _state["celery"] = True
            _emit("celery_import")
        if not _state["hooked"] and name != "celery.signals":
            signals = sys.modules.get("celery.signals")
            if signals is not None and hasattr(signals, "task_prerun"):
                _state["hooked"] = True
                seen = []
                signals.worker_ready.connect(lambda **kw: _emit("worker_ready"), weak=False)
                def first(**kw):
                    if not seen:
                        seen.append(1)
                        _emit("first_task")
                signals.task_prerun.connect(first, weak=False)
    sys.addaudithook(_hook)
'''


def wrap(owner, name: str, marks: dict, label: str) -> None:
    """Record the start and end (wall clock) of the first call of ``owner.name``."""
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.time()
        try:
            return inner(*args, **kwargs)
        finally:
            marks.setdefault(label, (start, time.time()))
    setattr(owner, name, timed)


def one_run(trace_dir: str) -> dict:
    """One load() -> first result -> cleanup() in a fresh interpreter; its phases in ms."""
    import subprocess
    trace = os.path.join(trace_dir, f"trace-{time.time_ns()}.jsonl")
    env = dict(os.environ, CELERIAC_PROBE_TRACE=trace,
               PYTHONPATH=os.pathsep.join(filter(None, [trace_dir,
                                                        os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, __file__, "--one"], env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    marks = json.loads(out.stdout.strip().splitlines()[-1])
    events = []
    if os.path.exists(trace):
        with open(trace) as fh:
            events = [json.loads(line) for line in fh]
    return phases(marks, events)


def phases(marks: dict, events: list) -> dict:
    """Phase durations (ms) from the orchestrator's marks and the workers' events."""
    t0 = marks["load"][0]

    def ms(t):
        return round((t - t0) * 1000, 1)

    out = {"import celeriac (before load)": round(marks["import"] * 1000, 1)}
    for label in ("run dir", "redis start", "redis launch", "block spawn", "redis wait",
                  "celery link"):
        if label in marks:
            a, b = marks[label]
            out[f"{label} starts at"] = ms(a)
            out[f"{label} takes (ms)"] = round((b - a) * 1000, 1)
    out["load() returned at"] = ms(marks["load"][1])
    by_role, cpu = {}, {}
    for e in events:
        by_role.setdefault((e["role"], e["event"]), []).append(e["t"])
        cpu.setdefault((e["role"], e["event"]), []).append(e["cpu"])
    for role, event, label in [
            ("supervisor", "site", "supervisor interpreter up"),
            ("supervisor", "spawn", "supervisor spawns the first worker"),
            ("supervisor", "celery_import", "supervisor imports celery"),
            ("child", "site", "first worker interpreter up"),
            ("child", "celery_import", "first worker imports celery"),
            ("child", "worker_ready", "first worker ready"),
            ("child", "first_task", "first task starts in a worker")]:
        ts = [t for t in by_role.get((role, event), []) if t]
        if ts:
            out[f"{label} at"] = ms(min(ts))
    # CPU seconds each process had used by then: what the phase costs on an idle machine
    for role, event, label in [
            ("supervisor", "spawn", "supervisor CPU before spawning (ms)"),
            ("child", "celery_import", "worker CPU before importing celery (ms)"),
            ("child", "worker_ready", "worker CPU until ready (ms)")]:
        values = cpu.get((role, event))
        if values:
            out[label] = round(min(values) * 1000, 1)
    ready = [e["modules"] for e in events if e["event"] == "worker_ready"]
    if ready:
        out["modules a worker has imported when ready"] = min(ready)
    out["orchestrator CPU in load() (ms)"] = round(marks["load_cpu"] * 1000, 1)
    out["first task submitted at"] = ms(marks["submit"])
    out["first result at"] = ms(marks["result"])
    for label in ("cleanup: blocks", "cleanup: link", "cleanup: redis stop"):
        if label in marks:
            out[f"{label} (ms)"] = round((marks[label][1] - marks[label][0]) * 1000, 1)
    out["cleanup (ms)"] = round((marks["cleanup"][1] - marks["cleanup"][0]) * 1000, 1)
    return out


def measure_once() -> dict:
    """In this process: load(), one task, cleanup(); the marks as wall-clock times."""
    marks = {}
    t = time.time()
    import celeriac
    marks["import"] = time.time() - t
    from celeriac.orchestrator import broker, context, link
    from celeriac.providers import local
    wrap(context, "make_run_dir", marks, "run dir")
    if hasattr(broker.EmbeddedRedis, "launch"):
        wrap(broker.EmbeddedRedis, "launch", marks, "redis launch")
        wrap(broker.EmbeddedRedis, "wait_ready", marks, "redis wait")
    else:  # before start-up was overlapped: Redis started, then waited for, in one call
        wrap(broker.EmbeddedRedis, "start", marks, "redis start")
    wrap(link.CeleryLink, "__init__", marks, "celery link")
    wrap(local.LocalProvider, "submit", marks, "block spawn")
    from celeriac.orchestrator import blocks
    wrap(blocks.BlockManager, "shutdown", marks, "cleanup: blocks")
    wrap(link.CeleryLink, "close", marks, "cleanup: link")
    wrap(broker.EmbeddedRedis, "stop", marks, "cleanup: redis stop")

    @celeriac.python_app
    def noop():
        return 1

    run_dir = tempfile.mkdtemp(prefix="celeriac-probe-")
    start, cpu = time.time(), time.process_time()
    dfk = celeriac.load(celeriac.Config(run_dir=run_dir))
    marks["load"] = (start, time.time())
    marks["load_cpu"] = time.process_time() - cpu
    marks["submit"] = time.time()
    assert noop().result(timeout=60) == 1
    marks["result"] = time.time()
    start = time.time()
    dfk.cleanup()
    marks["cleanup"] = (start, time.time())
    shutil.rmtree(run_dir, ignore_errors=True)
    return marks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="write every run's phases to this file")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_once()))
        return 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="celeriac-probe-site-") as trace_dir:
        with open(os.path.join(trace_dir, "sitecustomize.py"), "w") as fh:
            fh.write(SITECUSTOMIZE)
        for _ in range(args.runs):
            runs.append(one_run(trace_dir))
    labels = list(dict.fromkeys(k for r in runs for k in r))
    print(f"celeriac start-up, medians of {len(runs)} runs (ms; 'at' = since load() was called)")
    for label in labels:
        values = [r[label] for r in runs if label in r]
        print(f"  {label:48s} {statistics.median(values):8.1f}   "
              f"(min {min(values):.1f}, max {max(values):.1f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(runs, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
