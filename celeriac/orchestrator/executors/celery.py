"""CeleryExecutor: apps run as Celery tasks on this executor's own queue, served by workers
that its provider starts in blocks (or that users start by hand with ``celeriac worker``).

The executor sends work and says what command a block runs; its
:class:`~celeriac.orchestrator.blocks.BlockManager` starts, watches, scales and cancels the
blocks, and counts the slots serving the queue.
"""

from __future__ import annotations

import glob
import logging
import os
import shlex
import sys

from celeriac.errors import ConfigurationError, SubmitException
from celeriac.option_checks import OptionChecks
from celeriac.orchestrator import parsl_options as parsl
from celeriac.orchestrator.blocks import BlockManager
from celeriac.orchestrator.executors.base import Executor
from celeriac.orchestrator.strategy import BlockRecord
from celeriac.private_files import private_dir
from celeriac.staging.base import check_storage_options
from celeriac.wire.keys import queue_name
from celeriac.wire.options import CPU_AFFINITIES

logger = logging.getLogger(__name__)

#: Celery pools a celeriac worker can run (gevent/eventlet need monkey-patching celeriac
#: does not do, and are usually not installed).
POOLS = ("solo", "prefork", "threads")
#: Level names a Celery worker accepts for --loglevel.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")


class CeleryExecutor(Executor):
    """Run apps on Celery workers.

    Args:
        label: names the executor (and its queue), for ``@python_app(executors=[...])``.
        provider: starts blocks of workers; default ``LocalProvider()`` (one block here).
            ``None`` starts no workers: run ``celeriac worker --run-file ...`` by hand.
        max_workers_per_node: at most this many worker processes per node (default: as many
            as the node's cores, memory and accelerators allow, computed on the node).
        workers_per_node: the same as ``max_workers_per_node`` (celeriac's older name).
        cores_per_worker: cores each worker process needs (may be fractional).
        mem_per_worker: GB of memory each worker process needs (default: not limited).
        available_accelerators: accelerator ids (or how many, numbered from 0): one worker
            per accelerator, each seeing only its own through ``CUDA_VISIBLE_DEVICES``
            (and ``ROCR_VISIBLE_DEVICES``, ``ZE_AFFINITY_MASK``).
        cpu_affinity: ``'none'``, ``'block'``, ``'alternating'`` or ``'block-reverse'``: pin
            each worker process to its own cores, as Parsl's HTEX does.
        pool: Celery pool of each worker process (``solo``, the default, runs the task in
            the worker's own loop, with the fewest hops, and fetches the next message when it
            ends; ``threads`` runs it in a thread while the worker fetches the next;
            ``prefork``/``threads`` with ``concurrency`` > 1 run several at once).
        concurrency: pool size per worker process.
        prefetch_multiplier: messages a worker holds per pool slot, the one running
            included (Celery's; None: 2 on Redis, so that with ``threads`` or ``prefork`` one
            is in hand and workers stay balanced to within one task, and 1 on RabbitMQ, where
            a stopped worker would keep receiving them unseen; ``solo`` holds only the one
            running).
        worker_loglevel: log level of the workers' logs under ``<run_dir>/workers``.
        worker_start_timeout: seconds a block may run without any of its workers connecting
            before it counts as failed (0: wait forever).
        worker_idle_timeout: seconds a worker stays without its orchestrator and without a
            task before it exits (0: never), so a killed run does not hold allocations.
        storage_access: staging providers for this executor's Files, tried in order (see
            ``celeriac.staging``); default file, FTP, HTTP(S) and zip, as in Parsl.
        working_dir: where staged files go on the worker (default: the worker's current
            directory).
        **parsl_options: options of Parsl's HighThroughputExecutor that mean nothing here
            (``address``, ``worker_debug``, ``encrypted``, ``start_method``, ...): accepted
            so that Parsl configs load, and logged as ignored.
        worker_python: the Python that runs ``celeriac worker`` in a block. Default: this
            interpreter when the provider's channel is local; ``python3`` (as found after
            ``worker_init``, e.g. an activated environment) when it is remote.

    Raises:
        ConfigurationError: an option has an impossible value.
    """

    def __init__(self, label: str = "celery", provider="default", workers_per_node=None,
                 pool: str = "solo", concurrency: int = 1, prefetch_multiplier: int | None = None,
                 worker_loglevel: str = "WARNING", *, max_workers_per_node=None,
                 cores_per_worker: float = 1.0, mem_per_worker=None,
                 available_accelerators=(), cpu_affinity: str = "none",
                 worker_start_timeout: float = 120.0, worker_idle_timeout: float = 120.0,
                 worker_python=None, storage_access=None, working_dir=None,
                 **parsl_options):
        self.ignored_options = parsl.accept(CeleryExecutor, parsl_options, parsl.HTEX)
        self.label = label
        self.storage_access, self.working_dir = check_storage_options(
            f"CeleryExecutor {label!r}", storage_access, working_dir)
        self.worker_python = worker_python
        self._remote_dir = None                       # the blocks' file dir on a remote host
        if provider == "default":
            from celeriac.providers.local import LocalProvider
            provider = LocalProvider()
        self.provider = provider
        if workers_per_node is not None and max_workers_per_node is not None \
                and workers_per_node != max_workers_per_node:
            raise ConfigurationError(
                "workers_per_node and max_workers_per_node are the same option; give one")
        self.max_workers_per_node = (max_workers_per_node if max_workers_per_node is not None
                                     else workers_per_node)
        if isinstance(available_accelerators, int) and not isinstance(available_accelerators,
                                                                      bool):
            if available_accelerators < 0:
                raise ConfigurationError(
                    f"CeleryExecutor {label!r}: available_accelerators must be a count >= 0 "
                    f"or a list of ids, not {available_accelerators!r}")
            available_accelerators = [str(i) for i in range(available_accelerators)]
        self.available_accelerators = [str(a) for a in available_accelerators]
        self.cores_per_worker = cores_per_worker
        self.mem_per_worker = mem_per_worker
        self.cpu_affinity = cpu_affinity
        self.pool = pool
        self.concurrency = concurrency
        self.prefetch_multiplier = prefetch_multiplier
        # Celery takes level names in any case; give the workers the canonical one.
        self.worker_loglevel = (worker_loglevel.upper() if isinstance(worker_loglevel, str)
                                else worker_loglevel)
        self.worker_start_timeout = worker_start_timeout
        self.worker_idle_timeout = worker_idle_timeout
        self._validate()
        self._new_run()

    def _new_run(self) -> None:
        """Forget the blocks of a previous run (a Config may be loaded again)."""
        self._blocks = None   # the BlockManager, from start()
        self._link = None
        self._shut = False

    def _validate(self) -> None:
        """Every option, checked in one place: an impossible value fails here, naming the
        option, rather than as blocks that fail to start (or never start) later."""
        from celeriac.providers.base import ExecutionProvider
        checks = OptionChecks(f"CeleryExecutor {self.label!r}")
        checks.integer("max_workers_per_node", self.max_workers_per_node, minimum=1,
                       none_ok=True)
        checks.number("cores_per_worker", self.cores_per_worker, above=True)
        checks.number("mem_per_worker", self.mem_per_worker, above=True, none_ok=True,
                      unit="GB")
        checks.choice("cpu_affinity", self.cpu_affinity, CPU_AFFINITIES)
        if any("," in a or not a.strip() for a in self.available_accelerators):
            checks.problem(f"available_accelerators must be ids without commas, not "
                           f"{self.available_accelerators!r}")
        checks.choice("pool", self.pool, POOLS, hint=(
            "gevent and eventlet pools are not supported: use 'threads' for I/O-bound apps"
            if self.pool in ("gevent", "eventlet") else "solo, prefork or threads"))
        checks.integer("concurrency", self.concurrency, minimum=1,
                       meaning="pool size per worker process")
        if self.pool == "solo" and isinstance(self.concurrency, int) and self.concurrency > 1:
            checks.problem(f"concurrency={self.concurrency} needs pool='prefork' or "
                           "'threads': the solo pool runs one task at a time")
        if self.prefetch_multiplier is not None:
            checks.integer("prefetch_multiplier", self.prefetch_multiplier, minimum=1)
        checks.choice("worker_loglevel", self.worker_loglevel, LOG_LEVELS)
        checks.seconds("worker_start_timeout", self.worker_start_timeout,
                       zero_means="waits for ever")
        checks.seconds("worker_idle_timeout", self.worker_idle_timeout,
                       zero_means="never exits")
        checks.kind("worker_python", self.worker_python, str, "a path or command name",
                    none_ok=True)
        if self.provider is not None and not isinstance(self.provider, ExecutionProvider):
            checks.problem(f"provider must be a provider (LocalProvider(), SlurmProvider(...)) "
                           f"or None for workers started by hand, not {self.provider!r}")
        checks.done()
        if self.provider is not None:
            self.provider.check_options()

    def start(self, context) -> None:
        if self._shut:  # loaded again with a new DFK: a new run, as in Parsl
            self._new_run()
        self._context = context
        # With the embedded broker, blocks start while it comes up: workers take far longer.
        early = context.launch_broker()
        self._link = None if early else context.celery_link()
        self.queue = queue_name(context.run_id, self.label)
        self._log_dir = os.path.join(context.run_dir, "workers")
        private_dir(self._log_dir)
        config = context.config
        self._run_file = context.run_file
        if self.provider is not None:
            self.provider.script_dir = os.path.join(context.run_dir, "submit_scripts")
            self._place_run_file()
        self._blocks = BlockManager(
            self.label, self.provider, _LinkQueue(lambda: self._link, self.queue),
            command=self.worker_command, output=self._output, by_hand=self._by_hand_command(),
            slots_per_node=self._slots_per_node(), strategy=getattr(config, "strategy", "simple"),
            max_idletime=getattr(config, "max_idletime", 120.0),
            start_timeout=self.worker_start_timeout, record=self._record_block)
        if self.provider is None:  # the user starts the workers: say how, where they look
            text = (f"run {context.run_id}: executor {self.label!r} has no provider; start "
                    f"its workers by hand:\n    {self._by_hand_command()}")
            logger.info("%s", text)
            print(f"celeriac: {text}", file=sys.stderr, flush=True)
        self._blocks.start(getattr(config, "strategy_period", 5))
        if early:
            self._link = context.celery_link()

    # ----------------------------------------------------------------- blocks

    @property
    def _channel(self):
        return getattr(self.provider, "channel", None)

    @property
    def _remote(self) -> bool:
        """Whether blocks start through a channel to another host (whose files, Python and
        import path are not necessarily this host's)."""
        from celeriac.providers.channels import LocalChannel
        return self._channel is not None and not isinstance(self._channel, LocalChannel)

    def _place_run_file(self) -> None:
        """Where the blocks' workers read the run's secrets: the run file itself on this
        host; a copy (mode 0600) in the channel's script_dir on a remote host."""
        self._remote_dir = None
        if self._remote:
            # A directory of this run's own (created 0700): runs sharing a script_dir never
            # read each other's secrets or write each other's logs.
            base = self._channel.script_dir or self.provider.script_dir
            self._remote_dir = f"{base.rstrip('/')}/{self._context.run_id}"
            self._run_file = self._channel.push_file(self._context.run_file, self._remote_dir)

    def worker_command(self, block: str) -> str:
        """The command a block runs (no secrets: they are in the 0600 run file)."""
        if self._remote:
            argv = [self.worker_python or "python3"]
        else:  # the workers import what this process imports
            argv = ["env", f"PYTHONPATH={_import_path()}", self.worker_python or sys.executable]
        argv += ["-m", "celeriac",
                 "worker", "--run-file", self._run_file, "--executor", self.label,
                "--block", block, "--cores-per-worker", str(self.cores_per_worker),
                "--cpu-affinity", self.cpu_affinity,
                "--idle-timeout", str(self.worker_idle_timeout),
                "--pool", self.pool, "--concurrency", str(self.concurrency),
                "--loglevel", self.worker_loglevel, "--logfile", self._log_path(block),
                "--die-with-parent"]
        if self.prefetch_multiplier is not None:
            argv += ["--prefetch-multiplier", str(self.prefetch_multiplier)]
        if self.max_workers_per_node is not None:
            argv += ["--max-workers-per-node", str(self.max_workers_per_node)]
        if self.mem_per_worker is not None:
            argv += ["--mem-per-worker", str(self.mem_per_worker)]
        if self.available_accelerators:
            argv += ["--accelerators", ",".join(self.available_accelerators)]
        return " ".join(shlex.quote(a) for a in argv)

    def _log_path(self, block: str) -> str:
        """The block's worker log, on the host its workers run on."""
        return os.path.join(self._remote_dir or self._log_dir, f"{self.label}-block{block}.log")

    @property
    def blocks(self) -> dict:
        """Every block this run started: block id -> the provider's job id."""
        return dict(self._blocks.blocks) if self._blocks is not None else {}

    @property
    def active_blocks(self) -> list:
        """Ids of the blocks that have not ended (queued, starting or running)."""
        return self._blocks.active if self._blocks is not None else []

    @property
    def capacity(self):
        """The task slots serving this executor's queue, as the strategy last saw them
        (:class:`~celeriac.orchestrator.blocks.Capacity`)."""
        return self._blocks.capacity if self._blocks is not None else None

    def _record_block(self, block: str, state: str, job_id=None) -> None:
        """Tell the run database (when the run has one) what became of a block."""
        database = self._context.monitoring
        if database is not None:
            database.block(self.label, block, state, job_id)

    def _output(self, record: BlockRecord) -> str:
        status = record.status
        return (self._tail(status and status.stderr_path) or self._worker_log_tail(record.id)
                or self._tail(status and status.stdout_path) or (status and status.message)
                or "(no output)")

    def _worker_log_tail(self, block: str) -> str:
        """The end of the newest worker log of a block (one per node and process, named
        from ``_log_path``); only on this host: a remote block's stderr says enough."""
        if self._remote:
            return ""
        base, ext = os.path.splitext(self._log_path(block))
        logs = sorted(glob.glob(f"{glob.escape(base)}-*{ext}"), key=os.path.getmtime)
        return _tail(logs[-1]) if logs else ""

    def _tail(self, path) -> str:
        """The end of a block's file, fetched through the channel when it is remote."""
        if path and self._remote:
            from celeriac.errors import ChannelError
            try:
                path = self._channel.pull_file(
                    path, private_dir(os.path.join(self._log_dir, "fetched")))
            except ChannelError:
                return ""
        return _tail(path)

    def _by_hand_command(self) -> str:
        """What a user runs to serve this queue (the run file as its blocks see it)."""
        run_file = self._run_file if self._remote else os.path.abspath(self._run_file)
        return f"celeriac worker --run-file {shlex.quote(run_file)} --executor {self.label}"

    def _slots_per_node(self) -> int:
        """Slots a node is expected to bring before any has connected: what the options and
        the provider's node size allow, else 1."""
        limits = []
        if self.max_workers_per_node:
            limits.append(self.max_workers_per_node)
        if self.available_accelerators:
            limits.append(len(self.available_accelerators))
        cores = getattr(self.provider, "cores_per_node", None)
        if cores:
            limits.append(int(cores // self.cores_per_worker))
        mem = getattr(self.provider, "mem_per_node", None)
        if mem and self.mem_per_worker:
            limits.append(int(mem // self.mem_per_worker))
        return max(1, min(limits) if limits else 1) * self.concurrency

    # ----------------------------------------------------------------- tasks

    def submit(self, func, call, resource_specification: dict):
        if self._shut:
            raise SubmitException(f"executor {self.label!r} has been shut down")
        if self._blocks.broken is not None:
            raise self._blocks.broken
        return self._link.submit(self.queue, func, call)

    def submit_chain(self, steps: list) -> list:
        """Send ``steps`` (``[(function, call)]``) in one message, each taking the result of
        the one before (see ``kernel.Send.then``); returns their futures."""
        if self._shut:
            raise SubmitException(f"executor {self.label!r} has been shut down")
        if self._blocks.broken is not None:
            raise self._blocks.broken
        return self._link.submit_chain(self.queue, steps)

    def chain_limit(self, app_name: str) -> int:
        """How many calls of app ``app_name`` a message may carry as a chain's steps."""
        link = self._link
        return 0 if link is None else link.chain_limit(app_name)

    def scale_out(self, blocks: int = 1) -> list:
        """Ask the provider for ``blocks`` more blocks (see BlockManager.scale_out)."""
        return self._blocks.scale_out(blocks)

    def scale_in(self, block_ids) -> list:
        """Cancel these blocks (see BlockManager.scale_in)."""
        return self._blocks.scale_in(block_ids)

    def shutdown(self) -> None:
        """Stop scaling, cancel every block this executor started, and close the provider's
        channel (an SSH connection must not outlive the run). Idempotent."""
        if self._shut:
            return
        self._shut = True
        if self._blocks is not None:
            self._blocks.shutdown()
        if self._channel is not None:
            self._channel.close()


class _LinkQueue:
    """The executor's queue as its BlockManager sees it, through the run's CeleryLink
    (``link()``: None while the embedded broker is still coming up: nothing sent yet)."""

    def __init__(self, link, queue: str):
        self._link = link
        self._queue = queue

    def outstanding(self) -> int:
        link = self._link()
        return 0 if link is None else link.outstanding(self._queue)

    def last_done(self):
        link = self._link()
        return None if link is None else link.last_done(self._queue)

    def workers(self) -> list:
        link = self._link()
        return [] if link is None else [w for w in link.transport.live_workers()
                                        if w.queue == self._queue]

    def fail_all(self, error: BaseException) -> None:
        link = self._link()
        if link is not None:
            link.fail_all(error, queue=self._queue)


def _import_path() -> str:
    """The orchestrator's import path, so workers import the same modules (a helper module
    beside the script, a test directory) that the functions sent to them refer to."""
    paths = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    paths += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return os.pathsep.join(dict.fromkeys(p for p in paths if p and os.path.isdir(p)))


def _tail(path, lines: int = 15) -> str:
    if not path:
        return ""
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""
