"""BlockManager: one executor's blocks, started, watched and cancelled through its provider,
and its pool's capacity (blocks, workers started by hand, autoscaling) counted in one place.

The split follows Parsl's ``BlockProviderExecutor``: the executor says what command a block
runs and sends work; this module does the rest. Every ``strategy_period`` seconds
:meth:`BlockManager.strategize` reads the blocks' states (from the provider) and the workers
alive on the queue (from their heartbeats), reports blocks that fail to start, and applies the
strategy's decision (:mod:`celeriac.orchestrator.strategy`). What it needs of the run is a
:class:`PoolQueue`: a test gives it an in-memory one.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from celeriac.errors import ExecutorError, ProviderError
from celeriac.orchestrator import strategy
from celeriac.orchestrator.strategy import BlockRecord, Limits, Load, ScalingLoop
from celeriac.providers.base import JobState

logger = logging.getLogger(__name__)

#: After this many blocks in a row fail to start, the executor's tasks fail.
MAX_BLOCK_FAILURES = 3
#: While tasks wait with no worker on the queue and no block to come, say so this often (s).
UNSERVED_WARNING_EVERY = 60.0


class PoolQueue(Protocol):
    """What a block manager reads and does on its executor's queue."""

    def outstanding(self) -> int:
        """Tasks sent to the queue that have not finished."""

    def last_done(self) -> float | None:
        """``time.monotonic()`` when a task of the queue last finished, if one has."""

    def workers(self) -> list:
        """The live workers serving the queue (``celeriac.wire.alive.LiveWorker``)."""

    def fail_all(self, error: BaseException) -> None:
        """Fail every task waiting on the queue with ``error``."""


@dataclass(frozen=True)
class Capacity:
    """The task slots serving one queue, by where they come from.

    Attributes:
        blocks: block id -> slots of its workers alive now.
        by_hand: slots of live workers that no block of this executor started (``celeriac
            worker`` run by hand), counting what their autoscalers may still grow to.
    """

    blocks: dict
    by_hand: int

    @classmethod
    def of(cls, workers, block_ids) -> "Capacity":
        """Count ``workers`` (live, on the queue) against this executor's ``block_ids``.

        The processes of one ``celeriac worker`` share a supervisor; one started with
        ``--autoscale MAX,MIN`` counts as its MAX slots, since it grows as tasks queue.
        """
        per_block = dict.fromkeys(block_ids, 0)
        supervised: dict = {}  # supervisor -> [slots alive now, slots it may grow to]
        by_hand = 0
        for w in workers:
            if w.block in per_block:
                per_block[w.block] += w.slots
            elif w.supervisor is not None:
                entry = supervised.setdefault(w.supervisor, [0, 0])
                entry[0] += w.slots
                entry[1] = max(entry[1], w.max_slots or 0)
            else:
                by_hand += w.slots
        by_hand += sum(max(now, most) for now, most in supervised.values())
        return cls(per_block, by_hand)


class BlockManager:
    """Starts, watches, judges and cancels one executor's blocks.

    Args:
        label: the executor's label (for the log and its errors).
        provider: its ExecutionProvider, or None when all its workers come by hand.
        queue: the executor's queue (:class:`PoolQueue`).
        command: ``command(block_id)`` is the shell command a block runs.
        output: ``output(record)`` is the end of a failed block's output, for its error.
        by_hand: the ``celeriac worker`` command a user runs to serve the queue by hand.
        slots_per_node: slots a node is expected to bring before any has connected.
        strategy: 'simple', 'none' or None (see :mod:`celeriac.orchestrator.strategy`).
        max_idletime: seconds without outstanding tasks before idle blocks are cancelled.
        start_timeout: seconds a running block may go without a worker connecting (0: ever).
        record: ``record(block, state, job_id)`` tells the run database (optional).
    """

    def __init__(self, label: str, provider, queue: PoolQueue, *,
                 command: Callable[[str], str], output: Callable[[BlockRecord], str],
                 by_hand: str, slots_per_node: int = 1, strategy: str | None = "simple",
                 max_idletime: float = 120.0, start_timeout: float = 120.0,
                 record: Callable | None = None):
        self.label = label
        self.provider = provider
        self.queue = queue
        self._command = command
        self._output = output
        self.by_hand = by_hand
        self._expected_slots = max(1, slots_per_node)
        self._strategy = strategy
        self._max_idletime = max_idletime
        self._start_timeout = start_timeout
        self._record = record or (lambda block, state, job_id=None: None)
        self._lock = threading.RLock()
        self.blocks: dict[str, str] = {}           # block id -> job id, every block started
        self.records: dict[str, BlockRecord] = {}
        self._block_ids = itertools.count()
        self._failures = 0                         # blocks in a row that failed to start
        self.broken: ExecutorError | None = None   # set once its blocks have failed for good
        self._slots_seen = 0                       # most slots one node has brought
        self._busy_at = time.monotonic()
        self._unobserved_since = None              # since when status reads have failed
        self.capacity = Capacity({}, 0)            # as last observed
        self._unserved_since = None                # since when tasks wait with no worker
        self._unserved_warned = None               # when that was last logged
        self._loop = None
        self._shut = False

    def start(self, period: float) -> "BlockManager":
        """Start the provider's ``init_blocks``, then a scaling round every ``period`` s (also
        without a provider: the rounds watch for tasks that wait with no worker)."""
        if self.provider is not None:
            if self.provider.max_blocks == 0:
                tell_user(
                    "executor %s: its provider has max_blocks=0, so it will never start a "
                    "block; its tasks run only on workers started by hand (%s). Raise "
                    "max_blocks, or give provider=None to say that workers come by hand",
                    self.label, self.by_hand)
            self.scale_out(self.provider.init_blocks)
        self._loop = ScalingLoop(self.strategize, period,
                                 name=f"celeriac-scaling-{self.label}").start()
        return self

    @property
    def active(self) -> list:
        """Ids of the blocks that have not ended (queued, starting or running)."""
        with self._lock:
            return [b.id for b in self.records.values() if not b.ended]

    # ----------------------------------------------------------------- scaling

    def scale_out(self, blocks: int = 1) -> list:
        """Ask the provider for more blocks; returns the job ids it gave.

        A provider that refuses (ProviderError, ScaleOutFailed) is reported in the log and
        counts as a block that failed to start; no exception reaches the caller.
        """
        started = []
        with self._lock:
            for _ in range(blocks):
                if self._shut or self.broken is not None:
                    break
                block = str(next(self._block_ids))
                try:
                    job_id = self.provider.submit(self._command(block), 1,
                                                  job_name=f"celeriac.{self.label}.block{block}")
                except ProviderError as e:
                    self._block_failed(block, f"the provider could not start it: {e}")
                    break
                self.blocks[block] = job_id
                self.records[block] = BlockRecord(block, job_id, time.monotonic())
                self._record(block, "submitted", job_id)
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
            records = [r for r in (self.records.get(b) for b in block_ids)
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
                self._record(record.id, "cancelled")
            return answers

    def strategize(self) -> None:
        """One scaling round: read the blocks and workers, report failures, then scale."""
        import redis  # here: redis-py's import is not on the path to starting the blocks
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
                if (self._start_timeout and self.broken is None
                        and now - self._unobserved_since >= self._start_timeout):
                    self._failures = MAX_BLOCK_FAILURES - 1
                    self._block_failed("(all)", (
                        f"the state of its blocks could not be read for "
                        f"{now - self._unobserved_since:.0f}s (worker_start_timeout): {e}"))
                return
            for record in list(self.records.values()):
                self._judge(record, now)
            if self.broken is not None or self._shut:
                return
            load = self.load(now)
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

    def load(self, now: float) -> Load:
        """The strategy's input: outstanding tasks and the capacity last observed."""
        outstanding = self.queue.outstanding()
        if outstanding:
            self._busy_at = now
        idle_since = max(self._busy_at, self.queue.last_done() or 0.0)
        return Load(outstanding=outstanding,
                    blocks=tuple(r.view() for r in self.records.values() if not r.ended),
                    other_slots=self.capacity.by_hand,
                    slots_per_node=self._slots_seen or self._expected_slots,
                    idle_since=idle_since, now=now)

    # ----------------------------------------------------------------- watching

    def _observe(self, now: float) -> None:
        """Update each live block's state from the provider, and the capacity from the
        workers' heartbeats."""
        live = [r for r in self.records.values() if not r.ended]
        if live:
            for record, status in zip(live, self.provider.status([r.job_id for r in live])):
                record.state = status.state
                record.status = status
                if status.state is JobState.RUNNING and record.running_since is None:
                    record.running_since = now
                    self._record(record.id, "running")
        workers = self.queue.workers()
        self.capacity = Capacity.of(workers, self.records)
        for record in live:
            record.slots = self.capacity.blocks[record.id]
            if any(w.ready for w in workers if w.block == record.id) and not record.ready:
                record.ready = True
                self._failures = 0
                self._slots_seen = max(self._slots_seen,
                                       record.slots // max(1, self.provider.nodes_per_block))
                logger.info("executor %s: block %s connected with %d slots", self.label,
                            record.id, record.slots)

    def _judge(self, record: BlockRecord, now: float) -> None:
        if record.ended:
            return
        verdict = strategy.judge_block(record, now, self._start_timeout)
        status = record.status
        if record.state.terminal:
            record.ended = True
            self._record(record.id, "failed" if record.state is JobState.FAILED else "ended")
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

    def _block_failed(self, block: str, why: str) -> None:
        self._failures += 1
        logger.error("executor %s: block %s failed to start (%d in a row): %s", self.label,
                     block, self._failures, why)
        if self._failures >= MAX_BLOCK_FAILURES and self.broken is None:
            self.broken = ExecutorError(self.label, (
                f"{self._failures} blocks in a row failed to start, so the tasks sent to it "
                f"cannot run. The last, block {block}: {why}"))
            self.queue.fail_all(self.broken)
            # nothing will run here any more: give back the blocks still queued or running
            self.scale_in(list(self.records))

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
        tell_user(
            "executor %s: %d tasks have waited %.0fs with no worker serving its queue, and no "
            "block will start (%s). Start workers by hand: %s", self.label, load.outstanding,
            load.now - self._unserved_since, why, self.by_hand)

    def shutdown(self) -> None:
        """Stop scaling and cancel every block still queued or running. Idempotent."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
        if self._loop is not None:
            self._loop.stop()
        with self._lock:
            left = list(self.records)
        if left:
            self.scale_in(left)


def tell_user(message: str, *args) -> None:
    """A warning the user must act on: to the run's log, and to stderr, where they are
    looking (the run's log handler keeps celeriac's warnings off the console)."""
    logger.warning(message, *args)
    print(f"celeriac: {message % args}", file=sys.stderr, flush=True)
