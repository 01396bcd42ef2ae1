"""Task states, the legal moves between them, and the task record.

The DFK changes a task's state in one place, :meth:`TaskRecord.move`, which refuses any move
not in ``TRANSITIONS`` and names the task's history, so a bug shows as an
``InvalidTransition`` at the point it happens rather than as a future that never resolves.
"""

from __future__ import annotations

import enum
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from celeriac.errors import InvalidTransition


class States(enum.Enum):
    """A task's state, named as in Parsl."""

    pending = "pending"          # waiting for dependencies
    launched = "launched"        # handed to an executor
    joining = "joining"          # a join app's body returned; waiting for its inner futures
    exec_done = "exec_done"      # finished successfully
    memo_done = "memo_done"      # result taken from the memo table
    failed = "failed"            # finished with an error, no retries left
    dep_fail = "dep_fail"        # never ran: a dependency failed
    cancelled = "cancelled"      # cancelled (AppFuture.cancel, or a revoke): never retried

    # Members are singletons compared by identity: hash them by identity too, in C (Enum's
    # own __hash__ is Python code, and the kernel hashes states several times per task).
    __hash__ = object.__hash__


FINAL_STATES = frozenset({States.exec_done, States.memo_done, States.failed, States.dep_fail,
                          States.cancelled})

TRANSITIONS = frozenset({
    (States.pending, States.launched),
    (States.pending, States.memo_done),
    (States.pending, States.dep_fail),
    (States.pending, States.failed),        # could not be launched (bad argument, no executor)
    (States.launched, States.exec_done),
    (States.launched, States.failed),
    (States.launched, States.pending),      # retry, or relaunch after a lost worker
    (States.launched, States.joining),
    (States.joining, States.exec_done),
    (States.joining, States.failed),
    (States.pending, States.cancelled),     # waiting (dependencies, memo owner, retry delay)
    (States.launched, States.cancelled),    # queued or running: the executor revokes it
    (States.joining, States.cancelled),
})


# Slots (no per-record dict: fewer objects for the cycle collector to walk) need Python 3.11's
# weakref_slot; on 3.10 a record keeps its dict.
_SLOTS = {"slots": True, "weakref_slot": True} if sys.version_info >= (3, 11) else {}


@dataclass(eq=False, **_SLOTS)
class TaskRecord:
    """Everything the orchestrator knows about one app call."""

    id: int
    func: Callable
    func_name: str
    kind: str                              # 'python' | 'bash' | 'join' | 'internal'
    args: tuple
    kwargs: dict
    executor: str
    app_fu: Any = None
    status: States = States.pending
    history: list = field(default_factory=list)
    depends: list = field(default_factory=list)
    resource_specification: dict = field(default_factory=dict)
    walltime: Optional[float] = None
    cache: bool = False
    ignore_for_cache: tuple = ()
    hashsum: Optional[str] = None
    try_id: int = 0
    fail_count: int = 0
    fail_cost: float = 0.0
    fail_history: list = field(default_factory=list)
    lost_count: int = 0
    retry_policy: Any = None               # a tenacity.Retrying deciding retries, or None
    retry_state: Any = None                # its tenacity.RetryCallState, from the first failure
    started: Optional[float] = None        # time.monotonic() of the first launch
    time_invoked: float = field(default_factory=time.time)
    time_returned: Optional[float] = None
    dfk: Any = None
    accepts: Optional[frozenset] = None    # parameter names the function takes (None: **kwargs)
    waiting: int = 0                       # dependencies (or joined futures) not yet done
    resolved: Optional[tuple] = None       # (args, kwargs) with futures replaced, for retries
    stage_ins: tuple = ()                  # DataFutures of this call's stage-in tasks
    staging: Any = None                    # its in-task transfers (staging.intask.StagePlan)
    followers: Optional[list] = None       # tasks waiting for this one alone (chains)
    after: Any = None                      # launched in the message of this record's call,
                                           # taking its result there (a chain)

    def move(self, finish: States) -> None:
        """Change state, refusing moves that are not in ``TRANSITIONS``."""
        start = self.status
        if (start, finish) not in TRANSITIONS:
            raise InvalidTransition(self.id, start.name, finish.name,
                                    [s.name for s in self.history + [start]])
        self.history.append(start)
        self.status = finish
        if finish in FINAL_STATES:
            self.time_returned = time.time()

    def __getitem__(self, key):
        # Parsl's retry_handler receives a dict-like task record: keep record['fail_count'] working.
        return getattr(self, key)
