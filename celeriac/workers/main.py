"""``celeriac worker``: a Celery worker that serves one executor queue of one run.

With ``--processes N`` (N > 1) this process supervises N single-process workers and restarts
any that dies, so a block keeps its capacity when one worker is killed.
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
    from celeriac.workers.app import make_app
    from celeriac.workers.backend import redis_client
    from celeriac.workers.liveness import Heartbeat

    hostname = hostname or f"celeriac-{label}-{os.getpid()}@{socket.gethostname()}"
    app = make_app(broker_url, key, prefetch_multiplier=prefetch_multiplier)
    heartbeat = Heartbeat(redis_client(broker_url), hostname).start()
    argv = ["worker", "-Q", queue_name(run_id, label), "-P", pool, "-c", str(concurrency),
            "-n", hostname, "-E", "--without-gossip", "--without-mingle",
            "--loglevel", loglevel]
    if logfile:
        argv += ["-f", logfile]
    try:
        app.worker_main(argv)
    finally:
        heartbeat.stop()


def supervise(processes: int, child_argv, env: dict) -> int:
    """Run ``processes`` workers, restart any that dies, stop them all on SIGTERM/SIGINT.

    A worker that dies within ``QUICK_EXIT`` seconds of starting, three times running, is
    broken (bad environment, unreachable broker): give up with exit code 1 rather than loop.
    """
    stopping = False
    children: dict[int, tuple[subprocess.Popen, float]] = {}
    quick_exits = 0

    def start(i: int) -> None:
        proc = subprocess.Popen(child_argv(i), env=env, preexec_fn=die_with_parent)
        children[i] = (proc, time.monotonic())

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        for proc, _t in children.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(processes):
        start(i)
    while True:
        alive = False
        for i, (proc, started) in list(children.items()):
            if proc.poll() is None:
                alive = True
                continue
            if stopping:
                continue
            quick_exits = quick_exits + 1 if time.monotonic() - started < QUICK_EXIT else 0
            if quick_exits >= 3:
                logger.error("workers keep exiting at start (last code %s); giving up",
                             proc.returncode)
                stop(signal.SIGTERM, None)
                return 1
            logger.warning("worker %d exited with %s; restarting it", i, proc.returncode)
            start(i)
            alive = True
        if not alive:
            return 0
        time.sleep(0.2)


def child_command(args, i: int) -> list[str]:
    """The command line of supervised worker ``i`` (secrets stay in the run file/env)."""
    cmd = [sys.executable, "-m", "celeriac", "worker", "--executor", args.executor,
           "--processes", "1", "--pool", args.pool, "--concurrency", str(args.concurrency),
           "--loglevel", args.loglevel]
    if args.run_file:
        cmd += ["--run-file", args.run_file]
    if args.run_id:
        cmd += ["--run-id", args.run_id]
    if args.key_file:
        cmd += ["--key-file", args.key_file]
    if args.hostname:
        cmd += ["--hostname", f"{args.hostname}-{i}"]
    if args.logfile:
        base, ext = os.path.splitext(args.logfile)
        cmd += ["--logfile", f"{base}-{i}{ext}"]
    return cmd
