"""``celeriac worker``: Celery workers that serve one executor queue of one run.

The ``celeriac worker`` process supervises Celery worker processes: it restarts any that
dies, so a block keeps its capacity, and it sends their heartbeats, so a task holding the GIL
in its worker cannot make that worker look dead (and says when one is stopped rather than
busy). How many it runs is decided here, on the
node, from the node's own cores, memory and accelerators (as Parsl's HTEX does), and each may
be pinned to its own accelerator and cores. With an idle timeout it exits once its run's
orchestrator is gone and it has nothing to run. It kills the process running a task its run
revoked (:mod:`celeriac.workers.cancel`), and exits at once, in one line, when its run has
ended (:mod:`celeriac.workers.run_end`). Placement: :mod:`celeriac.workers.placement`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

from celeriac.processes import die_with_parent
from celeriac.wire.keys import queue_name
from celeriac.workers.cancel import Terminator, revoke_follower
from celeriac.workers.placement import Placement
from celeriac.workers.pool import PoolSize, demand, serve_remote_control
from celeriac.workers.run_end import OrphanClock, RunEnd, orchestrator_seen

logger = logging.getLogger(__name__)

QUICK_EXIT = 5.0
#: The read end of a pipe on which a worker process started before its supervisor checked
#: the run waits, its imports done, for the go-ahead ("1"; anything else: exit at once).
START_FD_ENV = "CELERIAC_START_FD"


def run_worker(broker_url: str, key: bytes, run_id: str, label: str, *, pool: str = "solo",
               concurrency: int = 1, hostname: str | None = None, loglevel: str = "WARNING",
               logfile: str | None = None, prefetch_multiplier: int | None = None) -> None:
    """Run one Celery worker in this process until it is told to stop."""
    from celery import signals
    from celery.worker.control import Panel

    from celeriac.wire import worker_side
    from celeriac.workers import transport
    from celeriac.workers.app import make_app, state
    from celeriac.workers.liveness import READY_NOTE, HeldTasks, RunningNotes

    if not _may_start():
        return
    hostname = hostname or f"celeriac-{label}-{os.getpid()}@{socket.gethostname()}"
    app = make_app(broker_url, key, prefetch_multiplier=prefetch_multiplier, run_id=run_id)
    if transport.for_url(broker_url) is not None:  # a started task is never put back
        app.conf.broker_transport = transport.for_url(broker_url)
        if pool == "solo":  # messages run straight off the queue while nobody watches
            from celeriac.workers.follow_on import FollowOn
            transport.Channel.follow_on = FollowOn(state)
    state.main_pid, state.hostname = os.getpid(), hostname
    # Remote control runs no code but can decide a task's fate: anyone on the broker could
    # send it, so the commands that end tasks are not served (inspection still is). The
    # run's orchestrator hears revokes instead, and signs those it accepts (wire.revokes).
    for command in ("revoke", "terminate", "revoke_by_stamped_headers"):
        Panel.data.pop(command, None)
    state.running = RunningNotes.from_environment()
    serve_remote_control(state.running)  # pool_grow/shrink/autoscale: asks the supervisor
    client = worker_side.for_url(broker_url, run_id).records
    follow = revoke_follower(key, run_id)
    follow(client, quiet=True)  # before consuming: a message revoked already is skipped
    heartbeat = HeldTasks(client, hostname,
                          also=lambda c: (transport.retry_acks(c), follow(c))).start()
    # Tells the supervisor this worker reached the broker: a block whose workers never do
    # is reported by the orchestrator as failing to start.
    signals.worker_ready.connect(lambda **_kw: state.running.note(READY_NOTE), weak=False)
    if logfile:
        from celeriac.private_files import private_file
        logfile = private_file(logfile)  # 0600: Celery appends, keeping the mode
    # What `celery worker -Q ... -P ... -E --without-gossip --without-mingle` builds, without
    # its command line: celery.bin.celery imports every installed CLI plug-in (Flower,
    # click-repl, prompt_toolkit, tornado), most of a second of a worker's start-up. Quiet:
    # no banner (it probes the platform and the broker URL; the worker's log says it all).
    worker = app.Worker(hostname=hostname, pool_cls=pool, concurrency=concurrency,
                        queues=[queue_name(run_id, label)], task_events=True,
                        without_gossip=True, without_mingle=True, without_heartbeat=False,
                        loglevel=logging.getLevelName(loglevel.upper()), logfile=logfile,
                        optimization="default", quiet=True, no_color=False)
    try:
        worker.start()
    finally:
        if transport.Channel.follow_on is not None:  # a message taken, not started: back
            transport.Channel.follow_on.give_back()
        heartbeat.stop()


def _may_start() -> bool:
    """Wait (imports done) for the supervisor's go-ahead, if it started this process before
    checking its run; False: the run is over or its broker unreachable, so exit quietly."""
    fd = os.environ.pop(START_FD_ENV, None)
    if fd is None:
        return True
    import celery.apps.worker  # noqa: F401  (the rest of what starting imports, meanwhile)
    try:
        return os.read(int(fd), 1) == b"1"
    finally:
        os.close(int(fd))


def supervise(processes: int, child_argv, env: dict, broker_url: str, *, info: dict,
              run_id: str, idle_timeout: float = 0, key: bytes | None = None,
              pool: PoolSize | None = None, run_file: str | None = None,
              gate=None) -> int:
    """Run ``processes`` workers, beat for the live ones, restart any that dies, and stop
    them all on SIGTERM/SIGINT. ``child_argv(i, generation)`` gives (argv, node name).
    ``info`` (queue, block, slots) goes into each worker's alive key. ``pool``, if given,
    sizes the pool instead of ``processes``, as remote control and autoscale ask
    (:func:`resize_pool`).

    A worker that dies within ``QUICK_EXIT`` seconds of starting, three times running, is
    broken (bad environment, unreachable broker): give up with exit code 1 rather than loop.
    With ``idle_timeout`` > 0, stop (exit code 0) once the run's orchestrator has not been
    seen and no task has run for that many seconds. A worker that dies when ``key`` is not
    the run's key stops them all (exit code 2): the others would only die the same way.

    ``gate()``, if given, says whether to go on (None) or exit with its code; the first
    workers start before it is called, and import meanwhile (most of a worker's start-up),
    but start serving only once it says go on: a gate that says stop leaves no trace.
    """
    from celeriac.workers.liveness import RUNNING_FD_ENV

    stopping = False
    children: dict[int, tuple[subprocess.Popen, float, str]] = {}
    pipes: dict[str, int] = {}  # worker name -> read end of its running-tasks pipe
    generation = 0
    quick_exits = 0
    pool = pool or PoolSize(processes)
    retiring: set[int] = set()  # processes stopped to shrink the pool: not restarted

    go_ahead: list[int] = []  # write ends of the first workers' start pipes, while gated

    def start(i: int) -> None:
        nonlocal generation
        generation += 1  # a restarted worker gets a new name: the old one's tasks are lost
        argv, name = child_argv(i, generation)
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        child_env, fds = dict(env, **{RUNNING_FD_ENV: str(write_end)}), [write_end]
        if gate is not None and not go_ahead_given:
            wait_end, go_end = os.pipe()
            child_env[START_FD_ENV] = str(wait_end)
            fds.append(wait_end)
            go_ahead.append(go_end)
        proc = subprocess.Popen(argv, env=child_env, pass_fds=tuple(fds),
                                preexec_fn=die_with_parent)
        for fd in fds:
            os.close(fd)
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
    go_ahead_given = False
    for i in range(pool.processes):
        start(i)
    if gate is not None:
        code = gate()
        for fd in go_ahead:
            try:
                if code is None:
                    os.write(fd, b"1")
            except OSError:  # that one has died meanwhile: restarted below as usual
                pass
            finally:
                os.close(fd)
        go_ahead_given = True
        if code is not None:  # they have connected to nothing and said nothing: no trace
            for proc, _t, _n in children.values():
                proc.kill()
                proc.wait()
            for fd in pipes.values():
                os.close(fd)
            return code

    from celeriac.wire import deaths, worker_side
    from celeriac.workers.liveness import INTERVAL, AliveBeat
    from celeriac.workers.refusal import key_matches_run

    side = worker_side.for_url(broker_url, run_id)
    client = side.records
    beat = AliveBeat(client, info)
    terminator = Terminator(client, key, run_id)
    run_end = RunEnd(client, key, run_id, run_file)
    orphan = OrphanClock(orchestrator_seen(client, run_id), idle_timeout)
    last_beat = 0.0
    while True:
        alive = {name: proc.pid for proc, _t, name in children.values() if proc.poll() is None}
        for name in alive:
            beat.read(name, pipes[name])
        if alive and time.monotonic() - last_beat >= INTERVAL:
            beat.beat(alive)  # also says which of them are stopped (SIGSTOP, a debugger)
            last_beat = time.monotonic()
            terminator.check(beat, alive)
            why = None if stopping else run_end.over()
            if why is not None:
                logger.warning("%s", why)
                stop(signal.SIGTERM, None)
            if not stopping:
                resize_pool(pool, side, beat, children, retiring, start)
            if not stopping and orphan.expired(beat.busy(alive)):
                logger.warning("run %s: no orchestrator for %.0fs and no task running; "
                               "stopping its workers (idle timeout)", run_id, idle_timeout)
                stop(signal.SIGTERM, None)
        for i, (proc, started, name) in list(children.items()):
            if proc.poll() is None or stopping:
                continue
            if i in retiring:  # stopped to shrink the pool, and done
                retiring.discard(i)
                del children[i]
                beat.read(name, pipes[name])
                os.close(pipes.pop(name))
                beat.forget([name])
                continue
            beat.read(name, pipes[name])  # what it wrote before it died
            deaths.record(client, name, proc.returncode, beat.running.get(name, ()))
            if name in terminator.killed:  # it ran a revoked task: not a broken worker
                terminator.killed.discard(name)
                logger.warning("worker %s stopped to end a revoked task; restarting it", name)
                os.close(pipes.pop(name))
                start(i)
                continue
            quick_exits = quick_exits + 1 if time.monotonic() - started < QUICK_EXIT else 0
            if key is not None and key_matches_run(client, key, run_id) is False:
                logger.error("worker %s exited, and the signing key given to `celeriac worker` "
                             "is not run %s's key: stopping. Start it with the run's "
                             "worker.json (--run-file) or its CELERIAC_KEY", name, run_id)
                stop(signal.SIGTERM, None)
                return 2  # the dead worker is not forgotten: the run takes its task back
            if quick_exits >= 3:
                logger.error("workers keep exiting at start (last code %s); giving up",
                             proc.returncode)
                stop(signal.SIGTERM, None)
                return 1
            logger.warning("worker %s %s; restarting it", name,
                           deaths.describe(proc.returncode))
            os.close(pipes.pop(name))
            start(i)
        if not alive and stopping:
            beat.forget(name for _p, _t, name in children.values())
            return 0
        time.sleep(0.1)


def resize_pool(pool: PoolSize, side, beat, children: dict, retiring: set, start) -> None:
    """Start or stop worker processes so the pool has the size that its workers' requests
    (relayed in ``beat.requests``) and, when autoscaling, the queue ask for. Processes
    stopped to shrink go idle ones first, newest first; they finish the task they run."""
    while beat.requests:
        pool.request(beat.requests.pop(0))
    slots = int(beat.info.get("slots") or 1)
    current = {i: name for i, (proc, _t, name) in children.items()
               if i not in retiring and proc.poll() is None}
    if pool.autoscale is not None:
        pool.follow(demand(side, beat.info.get("queue"), list(current.values()), slots))
    beat.info["max_slots"] = pool.max_slots(slots)
    for _ in range(pool.processes - len(current)):
        start(min(set(range(len(children) + 1)) - set(children)))
    extra = len(current) - pool.processes
    if extra > 0:
        order = sorted(current, key=lambda i: (bool(beat.running.get(current[i])), -i))
        for i in order[:extra]:
            retiring.add(i)
            children[i][0].send_signal(signal.SIGTERM)  # warm: its task finishes first


def child_command(args, i: int, generation: int, placement: "Placement") -> tuple[list[str], str]:
    """The command line and node name of worker process ``i`` (secrets stay in the run file
    or the environment)."""
    block = f"-b{args.block}" if args.block is not None else ""
    name = args.hostname or f"celeriac-{args.executor}{block}-{os.getpid()}"
    name = f"{name}-{i}.{generation}@{socket.gethostname()}"
    cmd = [sys.executable, "-m", "celeriac", "worker", "--child", "--executor", args.executor,
           "--pool", args.pool, "--concurrency", str(args.concurrency),
           "--loglevel", args.loglevel, "--hostname", name]
    if args.prefetch_multiplier is not None:
        cmd += ["--prefetch-multiplier", str(args.prefetch_multiplier)]
    if placement.accelerators:
        cmd += ["--accelerator", placement.accelerators[i % len(placement.accelerators)]]
    if placement.cpus:  # a pool grown past the node's placement shares its cores
        cmd += ["--cpus", ",".join(map(str, placement.cpus[i % len(placement.cpus)]))]
    if args.run_file:
        cmd += ["--run-file", args.run_file]
    if args.run_id:
        cmd += ["--run-id", args.run_id]
    if args.key_file:
        cmd += ["--key-file", args.key_file]
    if args.logfile:
        # per process and per node: the nodes of a block may share one file system
        base, ext = os.path.splitext(args.logfile)
        cmd += ["--logfile", f"{base}-{socket.gethostname().split('.')[0]}-{i}{ext}"]
    return cmd, name
