"""The ``celeriac`` command: ``worker`` joins a run's pool, ``flower`` watches a run,
``status`` and ``report`` read a run's database.

Secrets (broker password, signing key) come from a run file or the environment
(``CELERIAC_BROKER``, ``CELERIAC_KEY``), never from the command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from celeriac.errors import CeleriacError, ConfigurationError

BROKER_ENV = "CELERIAC_BROKER"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="celeriac", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="start Celery workers serving one executor of a run")
    _add_run_options(w)
    w.add_argument("--executor", required=True, help="executor label whose queue to serve")
    w.add_argument("--processes", "--max-workers-per-node", dest="processes", type=int,
                   help="at most this many worker processes (default: as many as the "
                        "node's cores, memory and accelerators allow)")
    w.add_argument("--autoscale", metavar="MAX,MIN",
                   help="run between MIN (default 1) and MAX worker processes, growing as "
                        "tasks queue; Flower's autoscale control changes the range")
    w.add_argument("--autoscale-keepalive", type=float, default=30.0, metavar="SECONDS",
                   help="autoscale stops a process once the queue has wanted fewer for "
                        "this long (default 30)")
    w.add_argument("--cores-per-worker", type=float, default=1.0,
                   help="cores each worker process needs (default 1)")
    w.add_argument("--mem-per-worker", type=float, help="GB of memory each worker needs")
    w.add_argument("--accelerators", default="",
                   help="comma-separated accelerator ids: one worker per accelerator, "
                        "each seeing only its own (CUDA_VISIBLE_DEVICES, ...)")
    w.add_argument("--cpu-affinity", default="none",
                   choices=["none", "block", "alternating", "block-reverse"],
                   help="pin each worker process to its own cores, as Parsl's HTEX does")
    w.add_argument("--block", help="the block this worker belongs to (set by executors)")
    w.add_argument("--idle-timeout", type=float, default=120.0,
                   help="exit after this many seconds without the run's orchestrator and "
                        "without a task to run (default 120; 0 never exits)")
    w.add_argument("--pool", default="solo", choices=["solo", "prefork", "threads"])
    w.add_argument("--concurrency", type=int, default=1, help="pool size per worker process")
    w.add_argument("--prefetch-multiplier", type=int, default=None,
                   help="messages each pool slot holds, the one running included (default "
                        "2 on Redis: with --pool threads or prefork the next is in hand when a "
                        "task ends; 1 on RabbitMQ)")
    w.add_argument("--hostname", help="node name prefix (default celeriac-LABEL-PID)")
    w.add_argument("--loglevel", default="WARNING")
    w.add_argument("--logfile")
    w.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    w.add_argument("--accelerator", help=argparse.SUPPRESS)
    w.add_argument("--cpus", help=argparse.SUPPRESS)
    w.add_argument("--die-with-parent", action="store_true",
                   help="exit when the process that started this one dies (used by blocks)")

    f = sub.add_parser("flower", help="start Flower on a run's broker")
    _add_run_options(f)
    f.add_argument("--port", type=int, default=5555)
    f.add_argument("--address", default="127.0.0.1")

    st = sub.add_parser("status", help="a run's tasks per state and app, from its database")
    st.add_argument("run_dir", nargs="?", help="the run directory, or a directory of runs "
                    "(default: the newest run under ./runinfo)")

    rp = sub.add_parser("report", help="write a run's report: one HTML file, no server")
    rp.add_argument("run_dir", nargs="?", help="the run directory, or a directory of runs "
                    "(default: the newest run under ./runinfo)")
    rp.add_argument("-o", "--output", help="where to write it (default RUN_DIR/report.html)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return {"worker": _worker, "flower": _flower, "status": _status,
                "report": _report}[args.command](args)
    except CeleriacError as e:
        print(f"celeriac {args.command}: {e}", file=sys.stderr)
        return 2


def _add_run_options(p) -> None:
    p.add_argument("--run-file", help="a run's worker.json (broker URL, signing key, run id)")
    p.add_argument("--broker", help=f"broker URL; prefer ${BROKER_ENV}: a password on a "
                                    "command line is visible to every user of the machine")
    p.add_argument("--key-file", help="file holding the run's signing key (or set CELERIAC_KEY)")
    p.add_argument("--run-id", help="which run to serve, when several share the broker")


def _resolve(args, need_key: bool):
    """(broker_url, key, run_id) from the run file, options and environment."""
    from celeriac.wire import payload
    from celeriac.wire.runfile import RunFile
    if args.run_file:
        rf = RunFile.read(args.run_file)
        return rf.broker_url, rf.key.encode(), args.run_id or rf.run_id
    broker = args.broker or os.environ.get(BROKER_ENV)
    if not broker:
        raise ConfigurationError(f"no broker: pass --run-file, or set {BROKER_ENV}")
    key = payload.load_key(args.key_file) if need_key else None
    run_id = args.run_id or _only_active_run(broker)
    return broker, key, run_id


def _only_active_run(broker: str) -> str:
    from celeriac.wire import worker_side
    side = worker_side.for_url(broker)
    try:
        runs = side.active_runs()
    except side.errors as e:
        raise ConfigurationError(f"cannot reach the broker to find the run: {e}") from None
    finally:
        side.close()
    if len(runs) != 1:
        raise ConfigurationError(
            f"{len(runs)} runs are active on this broker {runs}; choose one with --run-id")
    return runs[0]


def _worker(args) -> int:
    from celeriac.wire.keys import queue_name
    from celeriac.workers.main import child_command, run_worker, supervise
    from celeriac.workers.placement import Placement, pin
    from celeriac.workers.run_end import run_gone
    if args.die_with_parent:
        from celeriac.processes import die_with_parent
        die_with_parent()
    if args.child:
        pin(args.accelerator, args.cpus)
    else:
        placement = Placement(args.processes, args.cores_per_worker, args.mem_per_worker,
                              [a for a in args.accelerators.split(",") if a],
                              args.cpu_affinity)  # before the broker: a bad fit needs none
        pool = _pool_size(args, placement)
    broker, key, run_id = _resolve(args, need_key=True)
    if args.child:
        run_worker(broker, key, run_id, args.executor, pool=args.pool,
                   concurrency=args.concurrency, hostname=args.hostname,
                   loglevel=args.loglevel, logfile=args.logfile,
                   prefetch_multiplier=args.prefetch_multiplier)
        return 0
    env = dict(os.environ)
    if not args.run_file:
        env[BROKER_ENV] = broker
        env["CELERIAC_KEY"] = key.decode()
        args.run_id = run_id
    info = {"queue": queue_name(run_id, args.executor), "block": args.block,
            "slots": args.concurrency, "supervisor": f"{socket.gethostname()}:{os.getpid()}"}
    scaling = (f" (autoscale max={pool.autoscale[0]} min={pool.autoscale[1]})"
               if pool.autoscale else "")

    def gate():  # while the workers import: the run is over? say so, and exit
        gone = run_gone(broker, key, run_id, args.run_file)
        if gone is None:
            print(f"celeriac worker: {pool.processes} worker processes{scaling} for "
                  f"{info['queue']}", file=sys.stderr, flush=True)
        return gone

    return supervise(pool.processes, lambda i, gen: child_command(args, i, gen, placement),
                     env, broker, info=info, run_id=run_id, idle_timeout=args.idle_timeout,
                     key=key, pool=pool, run_file=args.run_file, gate=gate)


def _pool_size(args, placement):
    """The supervisor's PoolSize: the node's placement, or the --autoscale range; never more
    processes than accelerators, when each has its own."""
    from celeriac.workers.pool import PoolSize, parse_autoscale
    limit = len(placement.accelerators) or None
    if not args.autoscale:
        return PoolSize(placement.count, limit=limit)
    if args.processes is not None:
        raise ConfigurationError("give --processes or --autoscale MAX,MIN, not both")
    if args.autoscale_keepalive < 0:
        raise ConfigurationError("--autoscale-keepalive must be seconds >= 0")
    return PoolSize(1, autoscale=parse_autoscale(args.autoscale),
                    keepalive=args.autoscale_keepalive, limit=limit)


def _status(args) -> int:
    from celeriac.orchestrator.runview import find_run, status_text
    print(status_text(find_run(args.run_dir)))
    return 0


def _report(args) -> int:
    from celeriac.orchestrator.report import write_report
    from celeriac.orchestrator.runview import find_run
    print(write_report(find_run(args.run_dir), args.output))
    return 0


def _flower(args) -> int:
    from celeriac.orchestrator.monitoring_flower import serve
    from celeriac.wire.runfile import RunFile
    run_dir = None
    if args.run_file:
        rf = RunFile.read(args.run_file)
        broker, run_id = rf.broker_url, args.run_id or rf.run_id
        run_dir = os.path.dirname(os.path.abspath(args.run_file))
    else:
        broker = args.broker or os.environ.get(BROKER_ENV)
        if not broker:
            raise ConfigurationError(f"no broker: pass --run-file, or set {BROKER_ENV}")
        run_id = args.run_id  # none: every run on the broker, until a signal
    return serve(broker, run_id, run_dir, args.port, args.address)


if __name__ == "__main__":
    sys.exit(main())
