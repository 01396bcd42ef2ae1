"""Providers against real schedulers.

The conformance suite runs the same tests on every provider that has a real scheduler here
(LocalProvider, SlurmProvider, GridEngineProvider), and on Slurm driven over the SSH channel
with no ``script_dir`` (the private sshd on 127.0.0.1 shares this file system, so every file
is pushed onto itself, as on a login node that mounts the user's home); scheduler-specific
tests follow. The schedulers and the sshd are started by the session fixtures in
``services.py``.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time

import psutil
import pytest

import celeriac
from celeriac import Config, python_app
from celeriac.errors import ScaleOutFailed
from celeriac.executors import CeleryExecutor
from celeriac.providers import (
    GridEngineProvider,
    JobState,
    LocalProvider,
    SlurmProvider,
)
from celeriac.providers.channels import LocalChannel, SSHChannel
from celeriac.providers.launchers import SimpleLauncher

STATUS_TOOL = {"slurm": "squeue", "slurm-ssh": "squeue", "gridengine": "qstat"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class RecordingChannel(LocalChannel):
    """LocalChannel that keeps the commands it ran, to count scheduler calls."""

    def __init__(self, **options):
        super().__init__(**options)
        self.commands: list[str] = []

    def execute_wait(self, cmd, timeout=None, env=None):
        self.commands.append(cmd)
        return super().execute_wait(cmd, timeout=timeout, env=env)


class RecordingSSHChannel(SSHChannel):
    """SSHChannel that keeps the commands it ran, to count scheduler calls."""

    def __init__(self, **options):
        super().__init__(**options)
        self.commands: list[str] = []

    def execute_wait(self, cmd, timeout=None, env=None):
        self.commands.append(cmd)
        return super().execute_wait(cmd, timeout=timeout, env=env)


def make_provider(kind, request, tmp_path, **options):
    """A provider of ``kind`` on its running scheduler, scripts under tmp_path."""
    options.setdefault("launcher", SimpleLauncher())  # exit codes pass through unchanged
    if kind == "local":
        provider = LocalProvider(**options)
    elif kind == "slurm":
        env = request.getfixturevalue("slurm").env
        provider = SlurmProvider(exclusive=False, channel=RecordingChannel(envs=env), **options)
    elif kind == "slurm-ssh":  # no script_dir: scripts go to their own path on the host
        env = request.getfixturevalue("slurm").env
        ssh = request.getfixturevalue("sshd")
        channel = RecordingSSHChannel(hostname=ssh.host, username="root", port=ssh.port,
                                      key_filename=ssh.key, host_keys_filename=ssh.known_hosts,
                                      envs=env)
        provider = SlurmProvider(exclusive=False, channel=channel, **options)
    else:
        env = request.getfixturevalue("gridengine").env
        provider = GridEngineProvider(channel=RecordingChannel(envs=env), **options)
    provider.script_dir = str(tmp_path / "submit_scripts")
    return provider


def wait_for(provider, job_id, done, timeout=60.0, seen=None):
    """Poll until ``done(status)``; record every state in ``seen``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        [status] = provider.status([job_id])
        if seen is not None:
            seen.append(status.state)
        if done(status):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {status} after {timeout} s")
        time.sleep(0.3)


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(params=["local", "slurm", "slurm-ssh", "gridengine"])
def provider_factory(request, tmp_path):
    created = []

    def factory(**options):
        provider = make_provider(request.param, request, tmp_path, **options)
        created.append(provider)
        return provider

    factory.kind = request.param
    yield factory
    for provider in created:  # nothing may outlive its test
        jobs = list(getattr(provider, "_jobs", {}))
        if jobs:
            provider.cancel(jobs)
        if getattr(provider, "channel", None) is not None:
            provider.channel.close()


# ---- conformance: every provider ------------------------------------------------------------

@pytest.mark.timeout(120)
def test_block_runs_then_completes(provider_factory, tmp_path):
    provider = provider_factory()
    marker = tmp_path / "ran"
    job = provider.submit(f"echo started > {marker}; sleep 4", 1, "conformance")
    seen = []
    running = wait_for(provider, job, lambda s: s.state is JobState.RUNNING or s.terminal,
                       seen=seen)
    assert running.state is JobState.RUNNING, seen
    done = wait_for(provider, job, lambda s: s.terminal)
    assert (done.state, done.exit_code) == (JobState.COMPLETED, 0)
    assert marker.read_text() == "started\n"
    assert done.stdout_path and done.stderr_path


@pytest.mark.timeout(120)
def test_failing_block_is_failed_with_its_exit_code_and_output(provider_factory, tmp_path):
    provider = provider_factory()
    job = provider.submit("echo 'cannot load module' >&2; exit 3", 1, "failing")
    status = wait_for(provider, job, lambda s: s.terminal)
    assert (status.state, status.exit_code) == (JobState.FAILED, 3)
    with open(status.stderr_path) as fh:
        assert "cannot load module" in fh.read()


@pytest.mark.timeout(120)
def test_cancel_ends_the_block_and_its_processes(provider_factory, tmp_path):
    provider = provider_factory()
    pidfile = tmp_path / "pid"
    job = provider.submit(f"sleep 300 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; "
                          f"wait", 1, "cancelled")
    deadline = time.monotonic() + 60
    while not pidfile.exists():
        assert time.monotonic() < deadline, provider.status([job])
        time.sleep(0.2)
    pid = int(pidfile.read_text())
    assert provider.cancel([job]) == [True]
    status = wait_for(provider, job, lambda s: s.terminal)
    assert status.state is JobState.CANCELLED
    deadline = time.monotonic() + 30
    while not pid_gone(pid):
        assert time.monotonic() < deadline, f"process {pid} of cancelled job {job} lives on"
        time.sleep(0.2)


@pytest.mark.timeout(120)
def test_status_of_many_jobs_in_one_call(provider_factory, tmp_path):
    provider = provider_factory()
    jobs = [provider.submit(f"sleep {n}", 1, f"many{n}") for n in (1, 2, 30)]
    channel = getattr(provider, "channel", None)
    before = len(getattr(channel, "commands", []))
    statuses = provider.status(jobs + ["12345678"])
    assert len(statuses) == 4 and statuses[-1].state is JobState.MISSING
    if provider_factory.kind in STATUS_TOOL:
        asked = [c for c in channel.commands[before:]
                 if c.startswith(STATUS_TOOL[provider_factory.kind])]
        assert len(asked) == 1, asked
    wait_for(provider, jobs[1], lambda s: s.terminal)
    first, second, third = provider.status(jobs)
    assert first.state is second.state is JobState.COMPLETED
    assert not third.terminal
    provider.cancel([jobs[2]])


@pytest.mark.timeout(120)
def test_cancel_of_unknown_or_finished_jobs_is_harmless(provider_factory, tmp_path):
    provider = provider_factory()
    job = provider.submit("true", 1, "short")
    wait_for(provider, job, lambda s: s.terminal)
    assert provider.cancel(["99999999", "not-a-job", job]) == [False, False, False]
    assert provider.status([job])[0].state is JobState.COMPLETED


# ---- Slurm ----------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_slurm_block_past_its_walltime_is_timeout(slurm, request, tmp_path):
    provider = make_provider("slurm", request, tmp_path, walltime="00:01:00")
    job = provider.submit("sleep 600", 1, "walltime")
    # Slurm limits are whole minutes, checked every ~30 s
    status = wait_for(provider, job, lambda s: s.terminal, timeout=200)
    assert status.state is JobState.TIMEOUT, status


@pytest.mark.parametrize("options, scheduler_words", [
    ({"partition": "nosuch"}, "Invalid partition name specified"),
    ({"scheduler_options": "#SBATCH --no-such-option"}, "unrecognized option"),
])
def test_slurm_refusal_is_scale_out_failed_in_sbatch_words(slurm, request, tmp_path, options,
                                                           scheduler_words):
    provider = make_provider("slurm", request, tmp_path, **options)
    with pytest.raises(ScaleOutFailed) as info:
        provider.submit("true", 1, "refused")
    assert scheduler_words in str(info.value)


@pytest.mark.timeout(120)
def test_slurm_two_node_block_runs_on_both_nodes(slurm, request, tmp_path):
    provider = make_provider("slurm", request, tmp_path, nodes_per_block=2)
    out = tmp_path / "hosts"
    job = provider.submit(f"srun hostname > {out}", 1, "twonodes")
    status = wait_for(provider, job, lambda s: s.terminal)
    assert status.state is JobState.COMPLETED, status
    assert sorted(out.read_text().split()) == sorted(slurm.nodes)


@pytest.mark.timeout(120)
def test_slurm_over_ssh_with_script_dir_being_where_the_scripts_are_written(slurm, request,
                                                                            tmp_path):
    """A channel's script_dir on a shared file system may be the very directory the provider
    writes its scripts in: each push is then onto itself, and the script stays whole."""
    provider = make_provider("slurm-ssh", request, tmp_path)
    provider.channel.script_dir = provider.script_dir
    marker = tmp_path / "ran"
    try:
        job = provider.submit(f"echo ran > {marker}", 1, "scriptdir")
        status = wait_for(provider, job, lambda s: s.terminal)
    finally:
        provider.channel.close()
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0)
    assert marker.read_text() == "ran\n"
    assert status.stdout_path.startswith(provider.script_dir)


# ---- Grid Engine ----------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_gridengine_block_past_its_walltime_is_timeout(gridengine, request, tmp_path):
    provider = make_provider("gridengine", request, tmp_path, walltime="00:00:03")
    job = provider.submit("sleep 600", 1, "walltime")
    status = wait_for(provider, job, lambda s: s.terminal, timeout=90)
    assert status.state is JobState.TIMEOUT, status


def test_gridengine_unknown_queue_is_scale_out_failed_in_qsub_words(gridengine, request,
                                                                    tmp_path):
    provider = make_provider("gridengine", request, tmp_path, queue="nosuch.q")
    with pytest.raises(ScaleOutFailed, match='unknown queue "nosuch.q"'):
        provider.submit("true", 1, "refused")


# ---- the executor on a batch system ----------------------------------------------------------

@python_app
def double(x):
    return 2 * x


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["slurm", "slurm-ssh", "gridengine"])
def test_apps_run_on_workers_in_a_batch_job(kind, request, tmp_path):
    options = {}
    if kind.startswith("slurm"):
        # the embedded broker listens on loopback: node 2's 127.0.0.1 is another host
        node = request.getfixturevalue("slurm").nodes[0]
        options["scheduler_options"] = f"#SBATCH --nodelist={node}"
    if kind == "slurm-ssh":  # what a user's worker_init does on the remote host
        options["worker_init"] = f"export PYTHONPATH={ROOT}"
    provider = make_provider(kind, request, tmp_path, launcher=None, **options)
    executor = CeleryExecutor(label=kind.replace("-", "_"), provider=provider,
                              workers_per_node=1, worker_python=sys.executable)
    with celeriac.load(Config([executor], run_dir=str(tmp_path / "runinfo"))) as dfk:
        assert double(21).result(timeout=120) == 42
        [job] = executor.blocks.values()
        assert provider.status([job])[0].state is JobState.RUNNING
        run_files = {dfk._context.run_file, executor._run_file}
        for path in run_files:  # the run's secrets stay the owner's alone
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        scripts = [p for p in os.listdir(provider.script_dir) if p.endswith(".submit")]
        assert scripts and all(os.path.getsize(os.path.join(provider.script_dir, p))
                               for p in scripts)
    status = wait_for(provider, job, lambda s: s.terminal)
    assert status.state is JobState.CANCELLED
    assert len(run_files) == (2 if kind == "slurm-ssh" else 1)  # pushed over SSH, or not


@pytest.mark.timeout(60)
def test_a_local_block_started_from_a_thread_outlives_that_thread(tmp_path):
    """The kernel's parent-death signal follows the forking *thread*: a block scaled out by
    the scaling thread must not die when that thread ends (only when the process does)."""
    provider = LocalProvider(launcher=SimpleLauncher())
    provider.script_dir = str(tmp_path)
    ids = []
    thread = threading.Thread(target=lambda: ids.append(provider.submit("sleep 60", 1, "t")))
    thread.start()
    thread.join()
    try:
        time.sleep(1)
        assert provider.status(ids)[0].state is JobState.RUNNING
    finally:
        assert provider.cancel(ids) == [True]
