"""Numbered run directories: runinfo/000, runinfo/001, ..."""

from __future__ import annotations

import logging
import os
import re

_NUMBERED = re.compile(r"^\d{3,}$")


def make_run_dir(base: str) -> str:
    """Create and return the next numbered directory under ``base``."""
    os.makedirs(base, exist_ok=True)
    while True:
        taken = [int(n) for n in os.listdir(base) if _NUMBERED.match(n)]
        path = os.path.join(base, f"{max(taken, default=-1) + 1:03d}")
        try:
            os.mkdir(path)  # atomic: two runs starting together get different numbers
            return os.path.abspath(path)
        except FileExistsError:
            continue


def start_file_logging(path: str, level=logging.INFO) -> logging.Handler:
    """Send celeriac's log records to ``path``; returns the handler so it can be removed."""
    handler = logging.FileHandler(path)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d %(name)s:%(lineno)d %(threadName)s %(levelname)s %(message)s",
        "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger("celeriac")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return handler
