"""``celeriac worker``: Celery workers that serve one executor queue of one run.

The ``celeriac worker`` process supervises ``--processes N`` Celery worker processes: it
restarts any that dies, so a block keeps its capacity, and it sends their heartbeats, so a
task holding the GIL in its worker cannot make that worker look dead.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

from celeriac.orchestrator.processes import die_with_parent
from celeriac.workers.runfile import queue_name

logger = logging.getLogger(__name__)

QUICK_EXIT = 5.0


def run_worker(broker_url: str, key: bytes, run_id: str, label: str, *, pool: str = "solo",
               concurrency: int = 1, hostname: str | None = None, loglevel: str = "WARNING",
               logfile: str | None = None, prefetch_multiplier: int = 4) -> None:
    """Run one Celery worker in this process until it is told to stop."""
    from celeriac.workers.app import make_app, state
    from celeriac.workers.backend import redis_client
    from celeriac.workers.liveness import HeldTasks, RunningNotes

    hostname = hostname or f"celeriac-{label}-{os.getpid()}@{socket.gethostname()}"
    app = make_app(broker_url, key, prefetch_multiplier=prefetch_multiplier)
    state.running = RunningNotes.from_environment()
    heartbeat = HeldTasks(redis_client(broker_url), hostname).start()
    argv = ["worker", "-Q", queue_name(run_id, label), "-P", pool, "-c", str(concurrency),
            "-n", hostname, "-E", "--without-gossip", "--without-mingle",
            "--loglevel", loglevel]
    if logfile:
        argv += ["-f", logfile]
    try:
        app.worker_main(argv)
    finally:
        heartbeat.stop()


def supervise(processes: int, child_argv, env: dict, broker_url: str) -> int:
    """Run ``processes`` workers, beat for the live ones, restart any that dies, and stop
    them all on SIGTERM/SIGINT. ``child_argv(i, generation)`` gives (argv, node name).

    A worker that dies within ``QUICK_EXIT`` seconds of starting, three times running, is
    broken (bad environment, unreachable broker): give up with exit code 1 rather than loop.
    """
    from celeriac.workers.backend import redis_client
    from celeriac.workers.liveness import INTERVAL, RUNNING_FD_ENV, AliveBeat

    beat = AliveBeat(redis_client(broker_url))
    stopping = False
    children: dict[int, tuple[subprocess.Popen, float, str]] = {}
    pipes: dict[str, int] = {}  # worker name -> read end of its running-tasks pipe
    generation = 0
    quick_exits = 0

    def start(i: int) -> None:
        nonlocal generation
        generation += 1  # a restarted worker gets a new name: the old one's tasks are lost
        argv, name = child_argv(i, generation)
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        proc = subprocess.Popen(argv, env=dict(env, **{RUNNING_FD_ENV: str(write_end)}),
                                pass_fds=(write_end,), preexec_fn=die_with_parent)
        os.close(write_end)
        children[i] = (proc, time.monotonic(), name)
        pipes[name] = read_end

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        for proc, _t, _n in children.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(processes):
        start(i)
    last_beat = 0.0
    while True:
        alive = [name for proc, _t, name in children.values() if proc.poll() is None]
        for name in alive:
            beat.read(name, pipes[name])
        if alive and time.monotonic() - last_beat >= INTERVAL:
            beat.beat(alive)
            last_beat = time.monotonic()
        for i, (proc, started, name) in list(children.items()):
            if proc.poll() is None or stopping:
                continue
            quick_exits = quick_exits + 1 if time.monotonic() - started < QUICK_EXIT else 0
            if quick_exits >= 3:
                logger.error("workers keep exiting at start (last code %s); giving up",
                             proc.returncode)
                stop(signal.SIGTERM, None)
                return 1
            logger.warning("worker %s exited with %s; restarting it", name, proc.returncode)
            os.close(pipes.pop(name))
            start(i)
        if not alive and stopping:
            beat.forget(name for _p, _t, name in children.values())
            return 0
        time.sleep(0.1)


def child_command(args, i: int, generation: int) -> tuple[list[str], str]:
    """The command line and node name of worker process ``i`` (secrets stay in the run file
    or the environment)."""
    name = args.hostname or f"celeriac-{args.executor}-{os.getpid()}"
    name = f"{name}-{i}.{generation}@{socket.gethostname()}"
    cmd = [sys.executable, "-m", "celeriac", "worker", "--child", "--executor", args.executor,
           "--pool", args.pool, "--concurrency", str(args.concurrency),
           "--loglevel", args.loglevel, "--hostname", name]
    if args.run_file:
        cmd += ["--run-file", args.run_file]
    if args.run_id:
        cmd += ["--run-id", args.run_id]
    if args.key_file:
        cmd += ["--key-file", args.key_file]
    if args.logfile:
        base, ext = os.path.splitext(args.logfile)
        cmd += ["--logfile", f"{base}-{i}{ext}"]
    return cmd, name
