"""The examples of Parsl's "Staging data files" page (docs/userguide/configuration/data.rst)
run on celeriac with only their imports changed: ``parsl`` -> ``celeriac``,
``HighThroughputExecutor`` -> ``CeleryExecutor`` (real Celery workers), and the servers'
URLs pointed at real HTTP and FTP servers on 127.0.0.1 instead of github.com and iana.org.
Each test runs in its own directory, as a user's script would (runinfo/ and staged files
land there)."""

from __future__ import annotations

import pytest
from staging_servers import FTPFiles, HTTPFiles

import celeriac as parsl
from celeriac import File, python_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

README = "Parsl - Parallel Scripting Library\n"
ARIN = "ARIN statistics format change\n"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    (root / "README.rst").write_text(README)
    (root / "ARIN-STATS-FORMAT-CHANGE.txt").write_text(ARIN)
    http_, ftp_ = HTTPFiles(root), FTPFiles(root, anonymous=True)
    yield {"http": http_.url, "ftp": ftp_.url}
    http_.close()
    ftp_.close()


@pytest.fixture
def script_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parsl.clear()
    yield tmp_path
    try:
        parsl.dfk().cleanup()
    except Exception:
        pass
    parsl.clear()


# The apps as the page writes them.

@python_app
def print_file(inputs=()):
    with open(inputs[0].filepath, 'r') as inp:
        content = inp.read()
        return(content)


@python_app
def convert(inputs=(), outputs=()):
    with open(inputs[0].filepath, 'r') as inp:
        content = inp.read()
        with open(outputs[0].filepath, 'w') as out:
            out.write(content.upper())


def test_the_default_staging_providers_read_a_remote_file(servers, script_dir):
    from celeriac import Config  # parsl.config
    from celeriac.executors import CeleryExecutor  # HighThroughputExecutor
    from celeriac.staging import default_staging  # ...data_manager

    config = Config(
        executors=[
            CeleryExecutor(
                storage_access=default_staging,
                # equivalent to the following
                # storage_access=[NoOpFileStaging(), FTPSeparateTaskStaging(),
                #                 HTTPSeparateTaskStaging()],
            )
        ]
    )
    parsl.load(config)

    # create an remote Parsl file
    f = File(f"{servers['http']}/README.rst")

    # call the print_file app with the Parsl file
    r = print_file(inputs=[f])
    assert r.result(timeout=60) == README


def test_noop_staging_uses_a_local_file_where_it_is(script_dir):
    from celeriac import Config
    from celeriac.executors import CeleryExecutor
    from celeriac.staging import NoOpFileStaging  # ...file_noop

    config = Config(
        executors=[
            CeleryExecutor(
                storage_access=[NoOpFileStaging()]
            )
        ]
    )
    parsl.load(config)
    (script_dir / "data.txt").write_text("local data\n")
    assert print_file(inputs=[File(f"file://{script_dir}/data.txt")]).result(timeout=60) \
        == "local data\n"
    assert print_file(inputs=[File(str(script_dir / "data.txt"))]).result(timeout=60) \
        == "local data\n"


def test_separate_task_staging_fetches_over_ftp_and_converts(servers, script_dir):
    from celeriac import Config
    from celeriac.executors import CeleryExecutor
    from celeriac.staging import FTPSeparateTaskStaging, HTTPSeparateTaskStaging

    config = Config(
        executors=[
            CeleryExecutor(
                storage_access=[HTTPSeparateTaskStaging(), FTPSeparateTaskStaging()]
            )
        ]
    )
    dfk = parsl.load(config)

    # create an remote Parsl file
    inp = File(f"{servers['ftp']}/ARIN-STATS-FORMAT-CHANGE.txt")

    # create a local Parsl file
    out = File(f'file://{script_dir}/ARIN-STATS-FORMAT-CHANGE.txt')

    # call the convert app with the Parsl file
    f = convert(inputs=[inp], outputs=[out])
    f.result(timeout=60)
    assert (script_dir / "ARIN-STATS-FORMAT-CHANGE.txt").read_text() == ARIN.upper()
    assert print_file(inputs=[File(f"{servers['http']}/README.rst")]).result(timeout=60) \
        == README
    dfk.wait_for_current_tasks()
    counts = {k.name: v for k, v in dfk.task_state_counts.items() if v}
    assert counts == {"exec_done": 4}   # two apps and their two downloads, as tasks


def test_in_task_staging_fetches_over_ftp_and_converts(servers, script_dir):
    from celeriac import Config
    from celeriac.executors import CeleryExecutor
    from celeriac.staging import FTPInTaskStaging, HTTPInTaskStaging

    config = Config(
        executors=[
            CeleryExecutor(
                storage_access=[HTTPInTaskStaging(), FTPInTaskStaging()]
            )
        ]
    )
    dfk = parsl.load(config)
    inp = File(f"{servers['ftp']}/ARIN-STATS-FORMAT-CHANGE.txt")
    out = File(f'file://{script_dir}/ARIN-STATS-FORMAT-CHANGE.txt')
    f = convert(inputs=[inp], outputs=[out])
    f.result(timeout=60)
    assert (script_dir / "ARIN-STATS-FORMAT-CHANGE.txt").read_text() == ARIN.upper()
    dfk.wait_for_current_tasks()
    counts = {k.name: v for k, v in dfk.task_state_counts.items() if v}
    assert counts == {"exec_done": 1}   # the download ran inside the app's task
