"""Options of Parsl's Config and executors that mean nothing in celeriac.

They are accepted, so that a Parsl site config loads after its imports change, and the DFK
logs once which ones it ignored. Any other unknown option is still a ``TypeError`` (with the
closest known names), so a typo is never silently ignored.
"""

from __future__ import annotations

import difflib
import inspect

CONFIG = frozenset({"usage_tracking", "project_name", "garbage_collect"})
HTEX = frozenset({
    "launch_cmd", "interchange_launch_cmd", "address", "loopback_address", "worker_ports",
    "worker_port_range", "interchange_port_range",
    "worker_debug", "start_method", "prefetch_capacity", "heartbeat_threshold",
    "heartbeat_period", "drain_period", "poll_period", "address_probe_timeout",
    "worker_logdir_root", "manager_selector", "block_error_handler", "encrypted",
    "remote_monitoring_radio", "enable_mpi_mode", "mpi_launcher",
})
THREADS = frozenset({"remote_monitoring_radio"})


def accept(owner, given: dict, ignorable: frozenset) -> dict:
    """``given`` (extra keyword arguments of ``owner``'s constructor), if Parsl has them all.

    Raises:
        TypeError: an option neither celeriac nor Parsl has, naming the closest ones.
    """
    unknown = sorted(set(given) - ignorable)
    if unknown:
        known = [p for p in inspect.signature(owner).parameters if p not in ("self", "kwargs")]
        close = sorted({m for name in unknown
                        for m in difflib.get_close_matches(name, known + sorted(ignorable))})
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TypeError(f"{owner.__name__}() got unexpected keyword arguments "
                        f"{', '.join(unknown)}{hint}")
    return dict(given)


def describe(owner: str, ignored: dict) -> str:
    """One log line naming the ignored options of ``owner``."""
    return (f"{owner}: ignoring Parsl options that mean nothing in celeriac: "
            f"{', '.join(sorted(ignored))}")
