"""In-task staging on real Celery workers: the transfers of an app call run inside the app's
own Celery task (so on its worker, whatever node that is), and a Parsl-style provider that
wraps every call anew does not make the run keep one pickled function per call."""

from __future__ import annotations

import json
import os

import pytest

import celeriac
from celeriac import Config, File, python_app
from celeriac.errors import DependencyError, StagingError
from celeriac.executors import CeleryExecutor
from celeriac.staging import Staging

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _where() -> dict:
    """The Celery task and process this code runs in."""
    from celery import current_task
    return {"task": current_task.request.id, "pid": os.getpid()}


class WhereStaging(Staging):
    """``where://<dir>/<name>`` Files: a stage-in writes where it ran; a stage-out copies
    the app's file to ``<dir>/<name>`` with a line saying where the copy ran."""

    def can_stage_in(self, file):
        return file.scheme == "where"

    def can_stage_out(self, file):
        return file.scheme == "where"

    def transfer_in(self, file, working_dir):
        if file.path.endswith("broken.txt"):
            raise OSError("the source is gone")
        with open(file.local_path, "w") as f:
            json.dump(_where(), f)

    def transfer_out(self, file, working_dir):
        with open(file.local_path) as src, open(file.path, "w") as dst:
            dst.write(src.read() + "\n" + json.dumps(_where()))


class WrapsEachCall(Staging):
    """Parsl's in-task shape (as its HTTPInTaskStaging): ``replace_task`` returns a new
    closure around the app for every call, which writes the input before calling it."""

    def can_stage_in(self, file):
        return file.scheme == "wrapped"

    def stage_in(self, dm, executor, file, parent_fut):
        file.local_path = os.path.join(dm.dfk.executors[executor].working_dir, file.filename)
        return None   # nothing to wait for: the wrapper does the work

    def replace_task(self, dm, executor, file, func):
        path = file.local_path

        def wrapper(*args, **kwargs):
            with open(path, "w") as f:
                f.write(file.netloc)
            return func(*args, **kwargs)
        return wrapper


@python_app
def where_am_i(inputs=(), outputs=()):
    import json
    import os

    from celery import current_task
    here = {"task": current_task.request.id, "pid": os.getpid()}
    if outputs:
        with open(outputs[0], "w") as f:
            f.write("written by the app")
    with open(inputs[0]) as f:
        return here, json.load(f)


@python_app
def read_text(inputs=()):
    with open(inputs[0]) as f:
        return f.read()


@python_app
def after(value):
    return value


@pytest.fixture(scope="module")
def dfk(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("scratch")
    celeriac.clear()
    d = celeriac.load(Config([CeleryExecutor(
        label="celery", workers_per_node=2, working_dir=str(scratch),
        storage_access=[WhereStaging(), WrapsEachCall()])],
        run_dir=str(tmp_path_factory.mktemp("runinfo"))))
    yield d
    d.cleanup()
    celeriac.clear()


def test_transfers_run_inside_the_apps_own_celery_task(dfk, tmp_path):
    calls = [where_am_i(inputs=[File(f"where://host/in-{i}.txt")],
                        outputs=[File(f"where://{tmp_path}/out-{i}.txt")]) for i in range(6)]
    for i, fut in enumerate(calls):
        app, staged_in = fut.result(timeout=60)
        fut.outputs[0].result(timeout=10)
        assert staged_in == app          # the same Celery task, the same process
        written, staged_out = (tmp_path / f"out-{i}.txt").read_text().split("\n")
        assert written == "written by the app" and json.loads(staged_out) == app
    assert dfk.tasks == {}                # no stage task of its own was left running


def test_a_failed_in_task_stage_in_fails_the_app_and_its_dependents(dfk):
    fut = where_am_i(inputs=[File("where://host/broken.txt")])
    with pytest.raises(StagingError, match=r"staging where://host/broken.txt failed: "
                                           r"OSError: the source is gone"):
        fut.result(timeout=60)
    with pytest.raises(DependencyError):
        after(fut).result(timeout=60)


def test_a_provider_wrapping_each_call_anew_keeps_one_pickled_function(dfk):
    texts = [read_text(inputs=[File(f"wrapped://call{i}/in-{i}.txt")]) for i in range(30)]
    assert [t.result(timeout=60) for t in texts] == [f"call{i}" for i in range(30)]
    functions = dfk.executors["celery"]._link._functions   # what the run keeps pickled
    assert len(functions) <= 3   # read_text, where_am_i, after: not one per call
