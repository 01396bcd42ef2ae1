"""OptionChecks: the checks every options class (Config, executors, providers) runs on its
values, so that a wrong number, a NaN, a wrong type or an unknown name fails at once with a
ConfigurationError naming the option and what is allowed, instead of hanging a run later.

Each class makes one ``OptionChecks``, checks all its options, then calls :meth:`done`, which
raises a single error listing every problem found::

    checks = OptionChecks("CeleryExecutor 'htex'")
    checks.integer("concurrency", concurrency, minimum=1)
    checks.seconds("worker_start_timeout", worker_start_timeout)
    checks.done()
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

from celeriac.errors import ConfigurationError

__all__ = ["OptionChecks"]


class OptionChecks:
    """Collects what is wrong with one object's options.

    Args:
        owner: how the message names the object, e.g. ``"Config"`` or
            ``"CeleryExecutor 'htex'"``.
    """

    def __init__(self, owner: str):
        self.owner = owner
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        """Record a problem that no standard check covers."""
        self.problems.append(text)

    def integer(self, name: str, value, minimum: int = 0, *, none_ok: bool = False,
                meaning: str = "") -> None:
        """``value`` must be an int (not a bool) >= ``minimum`` (or None if ``none_ok``)."""
        if value is None and none_ok:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = f"an integer >= {minimum}" + (" or None" if none_ok else "")
            self.problems.append(f"{name} must be {what}{_meaning(meaning)}, not {value!r}")

    def number(self, name: str, value, minimum: float = 0.0, *, above: bool = False,
               none_ok: bool = False, infinite_ok: bool = False, unit: str = "",
               meaning: str = "") -> None:
        """``value`` must be a real number >= ``minimum`` (> if ``above``), never NaN, and
        finite unless ``infinite_ok``."""
        if value is None and none_ok:
            return
        ok = (not isinstance(value, bool) and isinstance(value, (int, float))
              and not math.isnan(value) and (infinite_ok or not math.isinf(value))
              and (value > minimum if above else value >= minimum))
        if not ok:
            bound = f"> {minimum:g}" if above else f">= {minimum:g}"
            kind = "number" + (f" of {unit}" if unit else "")
            extra = " or None" if none_ok else ""
            finite = "" if infinite_ok else "finite "
            self.problems.append(f"{name} must be a {finite}{kind} {bound}{extra}"
                                 f"{_meaning(meaning)}, not {value!r}")

    def seconds(self, name: str, value, *, zero_means: Optional[str] = None,
                infinite_ok: bool = False) -> None:
        """A duration in seconds: > 0, or >= 0 when ``zero_means`` says what 0 does."""
        self.number(name, value, 0.0, above=zero_means is None, unit="seconds",
                    infinite_ok=infinite_ok,
                    meaning=f"0 {zero_means}" if zero_means is not None else "")

    def choice(self, name: str, value, choices: Iterable, hint: str = "") -> None:
        """``value`` must be one of ``choices``; ``hint`` says what to do otherwise."""
        choices = list(choices)
        if value not in choices:
            self.problems.append(f"{name} must be one of {choices}, not {value!r}"
                                 + (f" ({hint})" if hint else ""))

    def kind(self, name: str, value, types, what: str, *, none_ok: bool = False) -> None:
        """``value`` must be an instance of ``types`` (described to the user as ``what``)."""
        if value is None and none_ok:
            return
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                    else (types,)):
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            self.problems.append(f"{name} must be {what}, not {value!r}")

    def done(self) -> None:
        """Raise one ConfigurationError naming every problem found, if any.

        Raises:
            ConfigurationError: some option has an impossible value.
        """
        if self.problems:
            raise ConfigurationError(f"{self.owner}: " + "; ".join(self.problems))


def _meaning(text: str) -> str:
    return f" ({text})" if text else ""
