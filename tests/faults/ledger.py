"""Counting what a fault did to a run: every try of a task leaves a mark in a directory.

An app under test calls :func:`mark` with the ledger's directory and its own key; afterwards
:meth:`Ledger.figures` counts, per key, how many times it ran, and compares the futures'
outcomes with the expected values::

    ledger = Ledger(tmp_path)
    futs = {k: app(ledger.dir, k) for k in range(20)}
    ... fault ...
    figures = ledger.figures(futs, expected={k: 2 * k for k in futs}, timeout=120)
    assert figures == Figures(submitted=20, correct=20, lost=0, ran_twice=0, hung=0)
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path


def mark(directory: str, key) -> None:
    """Record one run of task ``key`` (call it first thing in the app, on the worker)."""
    Path(directory, f"{key}.{os.getpid()}.{uuid.uuid4().hex}").touch()


@dataclass(frozen=True)
class Figures:
    """What happened to a run's tasks."""

    submitted: int
    correct: int     # resolved to the expected value
    lost: int        # resolved with an exception (the fault reached the user as a failure)
    ran_twice: int   # keys whose app body ran more than once
    hung: int        # futures not done within the timeout


class Ledger:
    def __init__(self, tmp_path):
        self.dir = str(Path(tmp_path) / "ledger")
        os.makedirs(self.dir, exist_ok=True)

    def runs(self) -> dict:
        """``{key: times its app body started}``."""
        counts: dict = {}
        for name in os.listdir(self.dir):
            key = name.split(".", 1)[0]
            counts[key] = counts.get(key, 0) + 1
        return counts

    def figures(self, futures: dict, expected: dict, timeout: float) -> Figures:
        """Wait up to ``timeout`` seconds in all for ``futures`` ({key: future}), then count."""
        import time
        deadline = time.monotonic() + timeout
        correct = lost = hung = 0
        for key, fut in futures.items():
            try:
                value = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                hung += 1
            except BaseException:
                lost += 1
            else:
                correct += value == expected[key]
        runs = self.runs()
        twice = sum(1 for key in futures if runs.get(str(key), 0) > 1)
        return Figures(len(futures), correct, lost, twice, hung)
