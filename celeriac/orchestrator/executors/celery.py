"""CeleryExecutor: apps run as Celery tasks on this executor's own queue, served by workers
that its provider starts in blocks (or that users start by hand with ``celeriac worker``).

Every ``strategy_period`` seconds a scaling thread looks at the executor's outstanding tasks,
its blocks (from the provider) and the workers alive on its queue (from their heartbeats on
the broker), reports blocks that fail to start, and applies the strategy's decision
(:mod:`celeriac.orchestrator.strategy`).
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import shlex
import sys
import threading
import time

import redis

from celeriac.errors import ConfigurationError, ExecutorError, ProviderError, SubmitException
from celeriac.option_checks import OptionChecks
from celeriac.orchestrator import parsl_options as parsl
from celeriac.orchestrator import strategy
from celeriac.orchestrator.executors.base import Executor
from celeriac.orchestrator.strategy import BlockRecord, Limits, Load, ScalingLoop
from celeriac.private_files import private_dir
from celeriac.providers.base import JobState
from celeriac.staging.base import check_storage_options
from celeriac.workers.main import CPU_AFFINITIES
from celeriac.workers.runfile import queue_name

logger = logging.getLogger(__name__)

#: After this many blocks in a row fail to start, the executor's tasks fail.
MAX_BLOCK_FAILURES = 3
#: While tasks wait with no worker on the queue and no block to come, say so this often (s).
UNSERVED_WARNING_EVERY = 60.0
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
        pool: Celery pool of each worker process (``solo`` runs one task at a time with the
            fewest hops; ``prefork``/``threads`` with ``concurrency`` > 1).
        concurrency: pool size per worker process.
        prefetch_multiplier: messages a worker reserves ahead, per pool slot.
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
                 pool: str = "solo", concurrency: int = 1, prefetch_multiplier: int = 4,
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
        self._lock = threading.RLock()
        self._new_run()

    def _new_run(self) -> None:
        """Forget the blocks and state of a previous run (a Config may be loaded again)."""
        self.blocks: dict[str, str] = {}              # block id -> job id, every block started
        self._records: dict[str, BlockRecord] = {}
        self._block_ids = itertools.count()
        self._failures = 0                            # blocks in a row that failed to start
        self._broken = None                           # set once its blocks have failed for good
        self._slots_seen = 0                          # most slots one node has brought
        self._busy_at = 0.0
        self._unobserved_since = None                 # since when status reads have failed
        self._other_slots = 0                         # slots of workers no block started
        self._unserved_since = None                   # since when tasks wait with no worker
        self._unserved_warned = None                  # when that was last logged
        self._loop = None
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
        self._link = context.celery_link()
        self.queue = queue_name(context.run_id, self.label)
        self._log_dir = os.path.join(context.run_dir, "workers")
        private_dir(self._log_dir)
        config = context.config
        self._strategy = getattr(config, "strategy", "simple")
        self._max_idletime = getattr(config, "max_idletime", 120.0)
        self._busy_at = time.monotonic()
        if self.provider is None:
            logger.info("executor %s has no provider: its tasks run on workers started by "
                        "hand: %s", self.label, self._by_hand_command())
        else:
            self.provider.script_dir = os.path.join(context.run_dir, "submit_scripts")
            self._place_run_file()
            if self.provider.max_blocks == 0:
                logger.warning(
                    "executor %s: its provider has max_blocks=0, so it will never start a "
                    "block; its tasks run only on workers started by hand (%s). Raise "
                    "max_blocks, or give provider=None to say that workers come by hand",
                    self.label, self._by_hand_command())
            self.scale_out(self.provider.init_blocks)
        # Also without a provider: the loop watches for tasks that wait with no worker.
        self._loop = ScalingLoop(self.strategize, getattr(config, "strategy_period", 5),
                                 name=f"celeriac-scaling-{self.label}").start()

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
        self._run_file = self._context.run_file
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
                "--prefetch-multiplier", str(self.prefetch_multiplier),
                "--loglevel", self.worker_loglevel, "--logfile", self._log_path(block),
                "--die-with-parent"]
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
    def active_blocks(self) -> list:
        """Ids of the blocks that have not ended (queued, starting or running)."""
        with self._lock:
            return [b.id for b in self._records.values() if not b.ended]

    def _record_block(self, block: str, state: str, job_id=None) -> None:
        """Tell the run database (when the run has one) what became of a block."""
        database = getattr(getattr(self, "_context", None), "monitoring", None)
        if database is not None:
            database.block(self.label, block, state, job_id)

    def scale_out(self, blocks: int = 1) -> list:
        """Ask the provider for more blocks; returns the job ids it gave.

        A provider that refuses (ProviderError, ScaleOutFailed) is reported in the log and
        counts as a block that failed to start; no exception reaches the caller.
        """
        started = []
        with self._lock:
            for _ in range(blocks):
                if self._shut or self._broken is not None:
                    break
                block = str(next(self._block_ids))
                try:
                    job_id = self.provider.submit(self.worker_command(block), 1,
                                                  job_name=f"celeriac.{self.label}.block{block}")
                except ProviderError as e:
                    self._block_failed(block, f"the provider could not start it: {e}")
                    break
                self.blocks[block] = job_id
                self._records[block] = BlockRecord(block, job_id, time.monotonic())
                self._record_block(block, "submitted", job_id)
                logger.info("executor %s: block %s submitted as job %s", self.label, block,
                            job_id)
                started.append(job_id)
        return started

    def scale_in(self, block_ids) -> list:
        """Cancel these blocks through the provider; returns the provider's answers.

        A block counts as cancelled only once the provider accepted the cancel; a refusal
        (scheduler or channel down) is logged, and the block is cancelled again later.
        Blocks that ended are skipped, except FAILED ones: they may still sit in the queue in
        an error state (Grid Engine's Eqw, Slurm's SPECIAL_EXIT)."""
        with self._lock:
            records = [r for r in (self._records.get(b) for b in block_ids)
                       if r is not None and not r.cancelled
                       and (not r.ended or r.state is JobState.FAILED)]
            if not records:
                return []
            logger.info("executor %s: cancelling blocks %s", self.label,
                        [r.id for r in records])
            try:
                answers = self.provider.cancel([r.job_id for r in records])
            except ProviderError as e:
                logger.error("executor %s: could not cancel blocks %s: %s", self.label,
                             [r.id for r in records], e)
                return []
            for record in records:
                record.cancelled = True
                self._record_block(record.id, "cancelled")
            return answers

    def strategize(self) -> None:
        """One scaling round: read the blocks and workers, report failures, then scale."""
        with self._lock:
            if self._shut:
                return
            now = time.monotonic()
            try:
                self._observe(now)
                self._unobserved_since = None
            except (ProviderError, redis.exceptions.RedisError) as e:
                # The scheduler or the broker is not answering: judge nothing on stale data,
                # but do not wait for ever either.
                logger.warning("executor %s: cannot read its blocks' state this round: %s",
                               self.label, e)
                self._unobserved_since = self._unobserved_since or now
                if (self.worker_start_timeout and self._broken is None
                        and now - self._unobserved_since >= self.worker_start_timeout):
                    self._failures = MAX_BLOCK_FAILURES - 1
                    self._block_failed("(all)", (
                        f"the state of its blocks could not be read for "
                        f"{now - self._unobserved_since:.0f}s (worker_start_timeout): {e}"))
                return
            for record in list(self._records.values()):
                self._judge(record, now)
            if self._broken is not None or self._shut:
                return
            load = self._load(now)
            decision = (strategy.decide(self._strategy, load, Limits.of(self.provider),
                                        self._max_idletime)
                        if self.provider is not None else strategy.NOTHING)
            self._warn_if_unserved(load, decision)
            if decision.scale_out:
                logger.info("executor %s: starting %d blocks (%s)", self.label,
                            decision.scale_out, decision.why)
                self.scale_out(decision.scale_out)
            elif decision.scale_in:
                logger.info("executor %s: scaling in (%s)", self.label, decision.why)
                self.scale_in(decision.scale_in)

    def _observe(self, now: float) -> None:
        """Update each live block's state from the provider and its slots from heartbeats."""
        from celeriac.workers.liveness import live_workers
        live = [r for r in self._records.values() if not r.ended]
        if live:
            for record, status in zip(live, self.provider.status([r.job_id for r in live])):
                record.state = status.state
                record.status = status
                if status.state is JobState.RUNNING and record.running_since is None:
                    record.running_since = now
                    self._record_block(record.id, "running")
        workers = [w for w in live_workers(self._link.client) if w.queue == self.queue]
        self._other_slots = sum(w.slots for w in workers if w.block not in self._records)
        for record in live:
            mine = [w for w in workers if w.block == record.id]
            record.slots = sum(w.slots for w in mine)
            if any(w.ready for w in mine) and not record.ready:
                record.ready = True
                self._failures = 0
                self._slots_seen = max(self._slots_seen,
                                       record.slots // max(1, self.provider.nodes_per_block))
                logger.info("executor %s: block %s connected with %d slots", self.label,
                            record.id, record.slots)

    def _judge(self, record: BlockRecord, now: float) -> None:
        if record.ended:
            return
        verdict = strategy.judge_block(record, now, self.worker_start_timeout)
        status = record.status
        if record.state.terminal:
            record.ended = True
            self._record_block(record.id, "failed" if record.state is JobState.FAILED
                               else "ended")
            if verdict is None and not record.cancelled:
                logger.warning("executor %s: block %s (job %s) ended: %s", self.label,
                               record.id, record.job_id, record.state.name)
        if verdict == "ended":
            code = status.exit_code if status is not None else None
            self._block_failed(record.id, (
                f"its job {record.job_id} ended ({record.state.name}, exit code {code}) before "
                f"any worker connected. Its output ends with:\n{self._output(record)}"))
        elif verdict == "no workers":
            self._block_failed(record.id, (
                f"its job {record.job_id} has been running for "
                f"{now - record.running_since:.0f}s (worker_start_timeout) but none of its "
                "workers connected to the broker; is the broker reachable from the nodes, and "
                f"does worker_init start the worker? Its output ends with:\n"
                f"{self._output(record)}"))
            self.scale_in([record.id])

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

    def _block_failed(self, block: str, why: str) -> None:
        self._failures += 1
        logger.error("executor %s: block %s failed to start (%d in a row): %s", self.label,
                     block, self._failures, why)
        if self._failures >= MAX_BLOCK_FAILURES and self._broken is None:
            self._broken = ExecutorError(self.label, (
                f"{self._failures} blocks in a row failed to start, so the tasks sent to it "
                f"cannot run. The last, block {block}: {why}"))
            self._link.fail_all(self._broken, queue=self.queue)
            # nothing will run here any more: give back the blocks still queued or running
            self.scale_in(list(self._records))

    def _warn_if_unserved(self, load: Load, decision) -> None:
        """Log, every ``UNSERVED_WARNING_EVERY`` seconds, while tasks wait with no worker on
        the queue and no block started or coming (max_blocks=0, no provider, strategy
        'none' with init_blocks=0): such a run would otherwise wait in silence."""
        if not load.outstanding or load.blocks or load.other_slots or decision.scale_out:
            self._unserved_since = None
            return
        self._unserved_since = self._unserved_since or load.now
        if self._unserved_warned is not None and \
                load.now - self._unserved_warned < UNSERVED_WARNING_EVERY:
            return
        self._unserved_warned = load.now
        if self.provider is None:
            why = "it has no provider"
        elif self.provider.max_blocks == 0:
            why = "its provider has max_blocks=0"
        else:
            why = (f"strategy {self._strategy!r} starts no block "
                   f"(init_blocks={self.provider.init_blocks}, "
                   f"max_blocks={self.provider.max_blocks})")
        logger.warning(
            "executor %s: %d tasks have waited %.0fs with no worker serving its queue, and no "
            "block will start (%s). Start workers by hand: %s", self.label, load.outstanding,
            load.now - self._unserved_since, why, self._by_hand_command())

    def _by_hand_command(self) -> str:
        run_file = getattr(self, "_run_file", None) or self._context.run_file
        return f"celeriac worker --run-file {shlex.quote(run_file)} --executor {self.label}"

    def _load(self, now: float) -> Load:
        outstanding = self._link.outstanding(self.queue)
        if outstanding:
            self._busy_at = now
        idle_since = max(self._busy_at, self._link.last_done(self.queue) or 0.0)
        return Load(outstanding=outstanding,
                    blocks=tuple(r.view() for r in self._records.values() if not r.ended),
                    other_slots=self._other_slots, slots_per_node=self._slots_per_node(),
                    idle_since=idle_since, now=now)

    def _slots_per_node(self) -> int:
        """Slots a node is expected to bring before its workers connect: what nodes brought
        before, else what the options and the provider's node size allow, else 1."""
        if self._slots_seen:
            return self._slots_seen
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
        if self._broken is not None:
            raise self._broken
        return self._link.submit(self.queue, func, call)

    def shutdown(self) -> None:
        """Stop scaling, cancel every block this executor started, and close the provider's
        channel (an SSH connection must not outlive the run). Idempotent."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
        if self._loop is not None:
            self._loop.stop()
        with self._lock:
            left = list(self._records)
        if left:
            self.scale_in(left)
        if self._channel is not None:
            self._channel.close()


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
