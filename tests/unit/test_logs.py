"""Parsl's set_stream_logger and set_file_logger show celeriac's log where the user asks."""

import io
import logging

import pytest

import celeriac
from celeriac import python_app


@python_app
def double(x):
    return 2 * x


@pytest.fixture
def restore_celeriac_logger():
    logger = logging.getLogger("celeriac")
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in set(logger.handlers) - set(handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(level)


def test_set_stream_logger_shows_a_runs_log_on_the_stream(restore_celeriac_logger, load_dfk):
    stream = io.StringIO()
    assert celeriac.set_stream_logger(stream=stream, level=logging.INFO).name == "celeriac"
    dfk = load_dfk()
    assert double(4).result(timeout=5) == 8
    assert f"DFK started: run {dfk.run_id}" in stream.getvalue()


def test_set_file_logger_writes_debug_records_with_a_format_of_ones_own(
        restore_celeriac_logger, load_dfk, tmp_path):
    path = tmp_path / "mine.log"
    celeriac.set_file_logger(str(path), format_string="%(levelname)s|%(message)s")
    load_dfk()
    double(1).result(timeout=5)
    lines = path.read_text().splitlines()
    assert any(line.startswith("DEBUG|task 0 ") for line in lines), lines
