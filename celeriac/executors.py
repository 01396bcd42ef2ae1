"""Executors, importable as in Parsl (``from celeriac.executors import ThreadPoolExecutor``)."""

from celeriac.orchestrator.executors.base import Executor
from celeriac.orchestrator.executors.celery import CeleryExecutor
from celeriac.orchestrator.executors.threads import ThreadPoolExecutor

__all__ = ["Executor", "CeleryExecutor", "ThreadPoolExecutor"]
