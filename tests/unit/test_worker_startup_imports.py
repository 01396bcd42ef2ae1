"""A worker process imports what running tasks needs, not the orchestrator or Celery's CLI.

Start-up time of ``celeriac.load()`` to the first result is mostly the workers' imports:
the orchestrator (the DFK, staging's HTTP/FTP clients) and ``celery.bin.celery`` (which loads
every installed CLI plug-in: Flower, click-repl, prompt_toolkit, tornado) have no use there.
"""

import subprocess
import sys

import celeriac

# Everything `python -m celeriac worker` imports before and while starting a Celery worker
# (run_worker's function-level imports included).
WORKER_IMPORTS = """
import sys
import celeriac.cli, celeriac.workers.main, celeriac.workers.app, celeriac.workers.liveness
import celeriac.workers.transport, celeriac.wire.worker_side, celeriac.wire.revokes
from celery import signals
from celery.worker.control import Panel
import celery.apps.worker, celery.worker.consumer.consumer
print(" ".join(sorted(m for m in sys.modules if m.startswith(
    ("celeriac.orchestrator", "celeriac.staging", "celery.bin", "flower", "prompt_toolkit")))))
"""


def test_a_worker_process_does_not_import_the_orchestrator_or_celerys_cli():
    out = subprocess.run([sys.executable, "-c", WORKER_IMPORTS], capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.split() == []


def test_the_public_names_still_come_from_import_celeriac():
    out = subprocess.run([sys.executable, "-c", "from celeriac import *; "
                          "print(python_app.__module__, Config.__name__, File.__name__)"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["celeriac.orchestrator.apps", "Config", "File"]
    assert "load" in dir(celeriac)


def test_an_unknown_name_is_an_attribute_error():
    try:
        celeriac.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("celeriac.no_such_name did not raise")
