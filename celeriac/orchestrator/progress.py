"""Live progress of a run on the terminal: a tqdm bar of finished tasks, with done, running,
waiting and failed counts, a rate and an estimate.

Shown only when stderr is a terminal and ``Config(progress=True)`` (the default), and only for
runs still going after :data:`DELAY` seconds, so short scripts and logs stay quiet. A thread of
its own redraws it twice a second from the run's tally and the kernel's state counts; the DFK's
threads pay nothing for it.
"""

from __future__ import annotations

import sys
import threading
from typing import Callable, Optional

from celeriac.orchestrator.runlog import carry
from celeriac.orchestrator.states import States

__all__ = ["Progress", "DELAY"]

#: seconds a run must last before its bar appears
DELAY = 2.0
_PERIOD = 0.5


class Progress:
    """A progress bar over a run; :meth:`close` is idempotent.

    Args:
        tally: the run's :class:`~celeriac.orchestrator.summary.RunTally`.
        state_counts: returns the kernel's tasks per state now.
        stream: where to draw (default stderr); nothing is drawn unless it is a terminal.
    """

    def __init__(self, tally, state_counts: Callable[[], dict], stream=None):
        self._tally = tally
        self._counts = state_counts
        self._stream = stream if stream is not None else sys.stderr
        self._stop = threading.Event()
        self._bar = None
        self._thread: Optional[threading.Thread] = None
        isatty = getattr(self._stream, "isatty", None)
        self.shown = bool(isatty is not None and isatty())  # whether the bar is drawn
        if self.shown:
            self._thread = threading.Thread(target=carry(self._loop), daemon=True,
                                            name="celeriac-progress")
            self._thread.start()

    def _loop(self) -> None:
        if self._stop.wait(DELAY):
            return
        from tqdm import tqdm
        self._bar = tqdm(total=self._tally.submitted_count, unit="task", file=self._stream,
                         dynamic_ncols=True, desc="celeriac", leave=True)
        while True:
            self._draw()
            if self._stop.wait(_PERIOD):
                self._draw()
                return

    def _draw(self) -> None:
        bar, tally = self._bar, self._tally
        counts = self._counts()
        totals = tally.state_totals()
        done = tally.done_count()
        failed = totals[States.failed] + totals[States.dep_fail]
        bar.total = tally.submitted_count
        bar.set_postfix_str(
            f"done {done - failed}, running {counts[States.launched] + counts[States.joining]}"
            f", waiting {counts[States.pending]}, failed {failed}", refresh=False)
        bar.update(done - bar.n)  # rate and estimate come from tqdm
        bar.refresh()

    def close(self) -> None:
        """Draw the last state and stop. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
