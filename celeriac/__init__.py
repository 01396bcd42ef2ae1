"""celeriac: Parsl's programming model (apps, futures, dataflow) on Celery."""

from celeriac.config import Config
from celeriac.logs import set_file_logger, set_stream_logger
from celeriac.orchestrator.apps import bash_app, join_app, python_app
from celeriac.orchestrator.checkpoint import get_all_checkpoints, get_last_checkpoint
from celeriac.orchestrator.dflow import AUTO_LOGNAME, DataFlowKernel
from celeriac.orchestrator.futures import AppFuture, DataFuture
from celeriac.orchestrator.loader import clear, dfk, load, wait_for_current_tasks
from celeriac.orchestrator.memo import id_for_memo
from celeriac.staging.files import File

__version__ = "0.1.0"

__all__ = [
    "python_app", "bash_app", "join_app", "AppFuture", "DataFuture", "File", "AUTO_LOGNAME",
    "Config", "DataFlowKernel", "load", "clear", "dfk", "wait_for_current_tasks",
    "id_for_memo", "get_all_checkpoints", "get_last_checkpoint", "set_stream_logger",
    "set_file_logger", "__version__",
]
