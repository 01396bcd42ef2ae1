"""Parsl's logging helpers: celeriac's log on a stream or in a file of your choosing.

Each run already writes ``celeriac.log`` in its run directory; these are for watching a run
in the terminal (``celeriac.set_stream_logger()``) or keeping a log elsewhere.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, TextIO

__all__ = ["set_stream_logger", "set_file_logger"]

FORMAT = "%(asctime)s.%(msecs)03d %(name)s:%(lineno)d %(threadName)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def set_stream_logger(name: str = "celeriac", level: int = logging.DEBUG,
                      format_string: Optional[str] = None,
                      stream: Optional[TextIO] = None) -> logging.Logger:
    """Send the ``name`` logger's records at ``level`` and above to ``stream`` (stderr).

    Returns:
        The logger.
    """
    return attach(logging.StreamHandler(stream or sys.stderr), name, level, format_string)


def set_file_logger(filename: str, name: str = "celeriac", level: int = logging.DEBUG,
                    format_string: Optional[str] = None) -> logging.Logger:
    """Append the ``name`` logger's records at ``level`` and above to ``filename``.

    Returns:
        The logger.
    """
    return attach(logging.FileHandler(filename), name, level, format_string)


def attach(handler: logging.Handler, name: str, level: int,
           format_string: Optional[str] = None) -> logging.Logger:
    """Give ``handler`` celeriac's format (or ``format_string``) and ``level``, add it to
    the ``name`` logger, and lower that logger's level to ``level`` if needed."""
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(format_string or FORMAT, DATE_FORMAT))
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return logger
