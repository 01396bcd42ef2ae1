"""Memoization, importable as in Parsl
(``from celeriac.memoization import BasicMemoizer, id_for_memo``)."""

from celeriac.orchestrator.memo import BasicMemoizer, id_for_memo

__all__ = ["BasicMemoizer", "id_for_memo"]
