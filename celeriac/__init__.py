"""celeriac: Parsl's programming model (apps, futures, dataflow) on Celery.

The public names are imported when first used (PEP 562), so a process that only runs tasks
(``python -m celeriac worker``) never imports the orchestrator: half of a worker's start-up.
"""

import importlib

__version__ = "0.1.0"

__all__ = [
    "python_app", "bash_app", "join_app", "AppFuture", "DataFuture", "File", "AUTO_LOGNAME",
    "Config", "DataFlowKernel", "load", "clear", "dfk", "wait_for_current_tasks",
    "id_for_memo", "get_all_checkpoints", "get_last_checkpoint", "set_stream_logger",
    "set_file_logger", "__version__",
]

_HOMES = {
    "Config": "celeriac.config",
    "set_file_logger": "celeriac.logs", "set_stream_logger": "celeriac.logs",
    "bash_app": "celeriac.orchestrator.apps", "join_app": "celeriac.orchestrator.apps",
    "python_app": "celeriac.orchestrator.apps",
    "get_all_checkpoints": "celeriac.orchestrator.checkpoint",
    "get_last_checkpoint": "celeriac.orchestrator.checkpoint",
    "AUTO_LOGNAME": "celeriac.orchestrator.dflow",
    "DataFlowKernel": "celeriac.orchestrator.dflow",
    "AppFuture": "celeriac.orchestrator.futures", "DataFuture": "celeriac.orchestrator.futures",
    "clear": "celeriac.orchestrator.loader", "dfk": "celeriac.orchestrator.loader",
    "load": "celeriac.orchestrator.loader",
    "wait_for_current_tasks": "celeriac.orchestrator.loader",
    "id_for_memo": "celeriac.orchestrator.memo",
    "File": "celeriac.staging.files",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'celeriac' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later look-ups are plain attribute reads
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
