"""Start-up on the embedded default: workers start while Redis comes up, and import only what
running tasks needs (see benchmarks/startup_probe.py for where the time goes)."""

import os
import socket
import sys

import pytest

import celeriac
from celeriac import Config, python_app
from celeriac.errors import ConfigurationError
from celeriac.orchestrator.broker import EmbeddedRedis
from celeriac.orchestrator.context import RunContext
from celeriac.wire.runfile import RunFile

pytestmark = pytest.mark.integration

CLI_MODULES = ("celery.bin", "flower", "prompt_toolkit", "click_repl")


@python_app
def cli_modules_in_the_worker():
    return sorted(m for m in sys.modules if m.startswith(CLI_MODULES))


@pytest.mark.timeout(120)
def test_a_worker_runs_tasks_without_loading_celerys_command_line(tmp_path):
    with celeriac.load(Config(run_dir=str(tmp_path))):
        assert cli_modules_in_the_worker().result(timeout=60) == []


@pytest.mark.timeout(60)
def test_a_broker_that_loses_its_port_comes_up_on_another_and_the_run_file_follows(tmp_path):
    context = RunContext(Config(run_dir=str(tmp_path)))
    try:
        assert context.launch_broker()  # launched, not waited for: blocks may start now
        first = RunFile.read(context.run_file).broker_url
        # As if another process took the port between choosing it and Redis binding it:
        context._broker._proc.kill()
        context._broker._proc.wait()
        link = context.celery_link()
        url = RunFile.read(context.run_file).broker_url
        assert url != first and url == link.url  # the workers read where Redis really is
        assert link.transport.client.ping()
    finally:
        context.close()
    assert RunFile.read(context.run_file).ended is not None


@pytest.mark.timeout(60)
def test_a_broker_that_cannot_start_says_so_with_its_log(tmp_path):
    broker = EmbeddedRedis(str(tmp_path / "redis"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker.port = taken.getsockname()[1]  # a fixed port (a restart's): no other tried
        with pytest.raises(ConfigurationError, match="embedded Redis did not start"):
            broker.start(timeout=10)
    assert broker._proc is None and os.path.exists(tmp_path / "redis" / "redis.log")
