"""Block scaling: how many blocks an executor should have, decided from plain numbers.

:func:`decide` is pure: it takes one executor's :class:`Load` and its provider's
:class:`Limits` and returns a :class:`Decision` (start k blocks, cancel these blocks, or
nothing). :func:`judge_block` is pure too: it says whether a block has failed to start.
:class:`ScalingLoop` is the thin thread that calls a block manager's ``strategize()`` every
``strategy_period`` seconds; the block manager (:mod:`celeriac.orchestrator.blocks`) gathers
the inputs and applies the decisions.

Strategies (Parsl's names):

- ``simple``: start blocks while the outstanding tasks (times ``parallelism``) exceed the
  task slots, never above ``max_blocks``, and one block whenever tasks wait with no slot at
  all, so ``parallelism=0`` means "as few blocks as possible", not "none" (Parsl #97);
  cancel blocks once the executor has had no task outstanding for ``max_idletime`` seconds,
  never below ``min_blocks``.
- ``none`` (or ``None``): keep ``init_blocks`` (a block that ends is replaced); no scaling.

Why it cannot loop (Parsl #704, #3696): a block counts as capacity from the moment it is
submitted, with the slots its workers are expected to bring, so a block waiting in the
scheduler's queue is never submitted again; and a block's idle time starts no earlier than its
submission (never "infinitely idle" because it has not connected yet), and only while no task
is outstanding, so a block started for waiting tasks is not cancelled while they wait.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Optional

from celeriac.orchestrator.runlog import carry
from celeriac.providers.base import JobState, JobStatus

logger = logging.getLogger(__name__)

STRATEGIES = ("simple", "none", None)


@dataclass(frozen=True)
class Limits:
    """A provider's block limits."""

    init_blocks: int = 1
    min_blocks: int = 0
    max_blocks: int = 1
    nodes_per_block: int = 1
    parallelism: float = 1.0

    @classmethod
    def of(cls, provider) -> "Limits":
        return cls(provider.init_blocks, provider.min_blocks, provider.max_blocks,
                   provider.nodes_per_block, provider.parallelism)


@dataclass(frozen=True)
class BlockView:
    """One block that has not ended, as the strategy sees it.

    Attributes:
        id: the executor's block id.
        state: the provider's last word (PENDING while the scheduler queues it).
        slots: task slots of its workers alive now (0 until they start).
        submitted: when it was submitted (``time.monotonic()``).
    """

    id: str
    state: JobState
    slots: int
    submitted: float


@dataclass(frozen=True)
class Load:
    """What one executor has to do and what it has to do it with.

    Attributes:
        outstanding: tasks sent to the executor that have not finished.
        blocks: its blocks that have not ended.
        other_slots: slots of live workers on its queue that no block of it started (by hand;
            an autoscaling worker counts as its maximum): ``blocks.Capacity.by_hand``.
        slots_per_node: slots one node is expected to bring (before its workers connect).
        idle_since: when the executor last had a task outstanding (``time.monotonic()``).
        now: the current ``time.monotonic()``.
    """

    outstanding: int
    blocks: tuple = ()
    other_slots: int = 0
    slots_per_node: int = 1
    idle_since: float = 0.0
    now: float = 0.0


@dataclass(frozen=True)
class Decision:
    """Start ``scale_out`` blocks, or cancel the blocks in ``scale_in``; ``why`` for the log."""

    scale_out: int = 0
    scale_in: tuple = ()
    why: str = ""

    def __bool__(self):
        return bool(self.scale_out or self.scale_in)


NOTHING = Decision()


def capacity(load: Load, limits: Limits) -> int:
    """Task slots the executor has or is about to have: live slots of each block, or the
    expected slots of a block whose workers have not started yet, plus workers by hand."""
    expected = max(1, load.slots_per_node) * max(1, limits.nodes_per_block)
    return load.other_slots + sum(b.slots or expected for b in load.blocks)


def decide(strategy: Optional[str], load: Load, limits: Limits,
           max_idletime: float) -> Decision:
    """What to do now for one executor (no I/O).

    Args:
        strategy: 'simple', or 'none'/None.
        load: the executor's tasks, blocks and workers.
        limits: its provider's block limits.
        max_idletime: seconds without outstanding tasks before idle blocks are cancelled.

    Returns:
        The decision; ``NOTHING`` when the blocks are right as they are.
    """
    active = len(load.blocks)
    if strategy in ("none", None):
        missing = min(limits.init_blocks, limits.max_blocks) - active
        return Decision(scale_out=missing, why="keeping init_blocks") if missing > 0 \
            else NOTHING
    if strategy != "simple":
        raise ValueError(f"unknown strategy {strategy!r}")
    room = limits.max_blocks - active
    if active < limits.min_blocks and room > 0:
        return Decision(scale_out=min(limits.min_blocks - active, room), why="below min_blocks")
    if load.outstanding > 0:
        if room <= 0:
            return NOTHING
        wanted = math.ceil(load.outstanding * max(limits.parallelism, 0))
        have = capacity(load, limits)
        if have == 0:  # tasks wait with no slot at all: at least one block (Parsl #97)
            wanted = max(wanted, 1)
        if have >= wanted:
            return NOTHING
        per_block = max(1, load.slots_per_node) * max(1, limits.nodes_per_block)
        blocks = min(math.ceil((wanted - have) / per_block), room)
        return Decision(scale_out=blocks, why=(
            f"{load.outstanding} tasks outstanding, {have} slots (running, starting or "
            f"queued), {per_block} slots per block"))
    if active <= limits.min_blocks:
        return NOTHING
    idle = [b for b in load.blocks
            if load.now - max(load.idle_since, b.submitted) >= max_idletime]
    # Blocks not yet serving go first (they cost queue time, not work), then the oldest.
    idle.sort(key=lambda b: (b.slots > 0, b.state is JobState.RUNNING, b.submitted))
    cancel = tuple(b.id for b in idle[:active - limits.min_blocks])
    if not cancel:
        return NOTHING
    return Decision(scale_in=cancel, why=f"no task outstanding for {max_idletime}s or more")


@dataclass
class BlockRecord:
    """What a block manager remembers about one block it submitted."""

    id: str
    job_id: str
    submitted: float
    state: JobState = JobState.PENDING
    running_since: Optional[float] = None
    ready: bool = False          # some worker of it has connected, at some point
    slots: int = 0               # slots of its workers alive now
    cancelled: bool = False      # we cancelled it (scale in, start timeout, shutdown)
    ended: bool = False
    status: Optional[JobStatus] = None  # the provider's last status of it

    def view(self) -> BlockView:
        return BlockView(self.id, self.state, self.slots, self.submitted)


def judge_block(block: BlockRecord, now: float, start_timeout: float) -> Optional[str]:
    """Whether ``block`` has failed to start (no I/O).

    Returns:
        None when all is well (or it ended in a way that is not a failure: cancelled by us,
        walltime reached, or finished after its workers had connected); ``"ended"`` when it
        ended before any worker connected; ``"no workers"`` when it has been running for
        ``start_timeout`` seconds without a worker connecting.
    """
    if block.cancelled:
        return None
    if block.state.terminal:
        # A block whose workers had connected did start: if it dies later (preempted, node
        # lost, out of memory), the strategy replaces it; it is not a start failure.
        return None if block.ready or block.state is JobState.TIMEOUT else "ended"
    if (block.state is JobState.RUNNING and not block.ready and start_timeout
            and block.running_since is not None and now - block.running_since >= start_timeout):
        return "no workers"
    return None


class ScalingLoop:
    """Calls ``poll()`` every ``period`` seconds in a daemon thread until stopped.

    A failing ``poll`` is logged, and the loop goes on: one unreachable scheduler must not
    stop scaling for good. :meth:`stop` is idempotent.
    """

    def __init__(self, poll, period: float, name: str):
        self._poll = poll
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=carry(self._run), name=name, daemon=True)

    def start(self) -> "ScalingLoop":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._poll()
            except Exception:
                logger.exception("block scaling round failed")

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
