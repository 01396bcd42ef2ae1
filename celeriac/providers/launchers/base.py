"""Launcher: wraps the worker command so that it starts on every node of a block.

The contract, as in Parsl: a launcher is called with the command, the number of copies to run
per node and the number of nodes in the block, and returns the shell text that the block's job
script runs. It only builds text; it never runs anything, so tests can read its output.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Launcher(ABC):
    """Base of all launchers. ``debug`` adds ``set -x`` style tracing to the generated text."""

    def __init__(self, debug: bool = True):
        self.debug = debug

    @abstractmethod
    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int) -> str:
        """Return shell text that runs ``command`` ``tasks_per_node`` times on each of the
        block's ``nodes_per_block`` nodes."""

    def __repr__(self):
        return f"{type(self).__name__}()"
