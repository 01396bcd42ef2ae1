"""The run's tally (tasks per app and final state, retries, each app's first error) and the
end-of-run summary made from it.

:class:`RunTally` is a kernel observer: it keeps a few counters in memory (no I/O), so the
summary exists whether or not the run database is on, and the live progress bar reads it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Optional

from celeriac.orchestrator.states import FINAL_STATES, States

__all__ = ["RunTally", "format_summary"]

_FIRST_ERROR_CHARS = 2000


class RunTally:
    """Counts of a run's tasks, kept by the kernel's state changes (an observer)."""

    def __init__(self):
        self.began = time.time()
        self.submitted_count = 0
        self.finished = Counter()          # (app, final state) -> tasks
        self.retries = 0                   # failed tries that were run again
        self.first_error: dict[str, str] = {}  # app -> the first error of a task of it

    def submitted(self, record) -> None:
        if record.kind != "internal":
            self.submitted_count += 1

    def moved(self, record, start: States, finish: States, exception) -> None:
        if record.kind == "internal":
            return
        if finish in FINAL_STATES:
            self.finished[(record.func_name, finish)] += 1
            if finish in (States.failed, States.dep_fail) and exception is not None and \
                    record.func_name not in self.first_error:
                self.first_error[record.func_name] = (
                    f"task {record.id}: {type(exception).__name__}: {exception}"
                )[:_FIRST_ERROR_CHARS]
        elif start is States.launched and finish is States.pending and exception is not None:
            self.retries += 1  # (without one: a chain's step that was not run, sent again)

    def done_count(self) -> int:
        return sum(self.finished.values())

    def state_totals(self) -> Counter:
        totals = Counter()
        for (_, state), n in self.finished.items():
            totals[state] += n
        return totals


def format_summary(tally: RunTally, state_counts: dict, run_dir: str,
                   database: Optional[str], ended: Optional[float] = None) -> str:
    """The end-of-run summary, a few lines of plain text.

    Args:
        tally: the run's tally.
        state_counts: the kernel's tasks per state now (for tasks that never finished).
        run_dir: the run directory (its ``celeriac.log`` is named).
        database: the run database's path, or None when monitoring is off.
        ended: when the run ended (default now).
    """
    wall = (ended or time.time()) - tally.began
    totals = tally.state_totals()
    unfinished = sum(n for s, n in state_counts.items() if s not in FINAL_STATES)
    lines = [f"celeriac: {tally.submitted_count} tasks in {wall:.1f} s: " + ", ".join(
        f"{state.name} {totals[state]}" for state in States if totals[state])
        + (f", unfinished {unfinished}" if unfinished else "")
        + f"; {tally.retries} retries"]
    apps = sorted({app for app, _ in tally.finished})
    for app in apps:
        per = ", ".join(f"{state.name} {tally.finished[(app, state)]}" for state in States
                        if tally.finished[(app, state)])
        lines.append(f"  {app}: {per}")
    for app, error in sorted(tally.first_error.items()):
        first_line = error.strip().splitlines()[0] if error.strip() else error
        lines.append(f"  first error of {app}: {first_line}")
    lines.append(f"  log: {run_dir}/celeriac.log")
    if database:
        lines.append(f"  database: {database} (celeriac status {run_dir}; "
                     f"celeriac report {run_dir})")
    return "\n".join(lines)
