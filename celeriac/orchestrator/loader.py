"""The loaded DataFlowKernel: load, clear, dfk, wait_for_current_tasks."""

from __future__ import annotations

import threading

from celeriac.errors import ConfigurationError, NoDataFlowKernelError

_dfk = None
_lock = threading.RLock()


def load(config=None):
    """Start a DataFlowKernel for ``config`` (None: embedded broker and local workers) and
    make it the one apps use. Returns it; ``with celeriac.load(...):`` cleans up at the end.

    Raises:
        ConfigurationError: a DFK is already loaded (call ``clear()`` or clean it up first).
    """
    global _dfk
    from celeriac.orchestrator.dflow import DataFlowKernel
    with _lock:
        if _dfk is not None:
            raise ConfigurationError("a config has already been loaded: clean it up "
                                     "(dfk().cleanup()) or call celeriac.clear() first")
        _dfk = DataFlowKernel(config)
        return _dfk


def clear() -> None:
    """Forget the loaded DFK (it is not cleaned up)."""
    global _dfk
    with _lock:
        _dfk = None


def forget(dfk) -> None:
    """Forget ``dfk`` if it is the loaded one (called by its cleanup)."""
    global _dfk
    with _lock:
        if _dfk is dfk:
            _dfk = None


def dfk():
    """The loaded DataFlowKernel.

    Raises:
        NoDataFlowKernelError: nothing is loaded.
    """
    if _dfk is None:
        raise NoDataFlowKernelError("no DataFlowKernel is loaded: call celeriac.load() "
                                    "(or pass data_flow_kernel= to the app) before calling apps")
    return _dfk


def wait_for_current_tasks() -> None:
    """Wait until every task submitted to the loaded DFK has finished."""
    dfk().wait_for_current_tasks()
