"""The provider base: walltimes, job states, the submit-script fields every ClusterProvider
template may use, and LocalProvider applying its launcher."""

from __future__ import annotations

import time

import pytest

from celeriac.errors import ConfigurationError
from celeriac.providers import ClusterProvider, JobState, LocalProvider
from celeriac.providers.base import walltime_to_seconds
from celeriac.providers.channels import LocalChannel

FIELDS = ["jobname", "nodes", "tasks_per_node", "walltime", "walltime_seconds",
          "walltime_minutes", "scheduler_options", "worker_init", "submit_script_dir",
          "stdout_path", "stderr_path", "user_script"]  # user_script last: many lines


@pytest.mark.parametrize("text, seconds", [("00:10:00", 600), ("1:00:01", 3601),
                                           ("2-00:00:00", 172800), ("100:00:00", 360000)])
def test_walltimes(text, seconds):
    assert walltime_to_seconds(text) == seconds


@pytest.mark.parametrize("text", ["10", "00:60:00", "ten minutes", ""])
def test_bad_walltime_says_the_expected_form(text):
    with pytest.raises(ConfigurationError, match="HH:MM:SS"):
        walltime_to_seconds(text)


def test_timeout_and_missing_are_final_held_is_not():
    assert JobState.TIMEOUT.terminal and JobState.MISSING.terminal
    assert not JobState.HELD.terminal and not JobState.PENDING.terminal


class EchoProvider(ClusterProvider):
    """A ClusterProvider whose "scheduler" is bash: the submit command prints the script."""

    label = "echo"
    template = "\n".join(f"{name}=${{{name}}}" for name in FIELDS)

    def _submit_command(self, script_path):
        return f"cat {script_path}; echo JOB 7"

    def _parse_job_id(self, stdout):
        self.rendered = stdout
        return stdout.rsplit("JOB ", 1)[-1].strip()

    def _query(self, job_ids):
        return {}

    def _cancel_command(self, job_ids):
        return "true"


def test_every_documented_template_field_is_filled(tmp_path):
    provider = EchoProvider(walltime="00:01:30", nodes_per_block=3, worker_init="init",
                            scheduler_options="#X opt", channel=LocalChannel())
    provider.script_dir = str(tmp_path)
    assert provider.submit("run me", 2, "blk") == "7"
    head, user_script = provider.rendered.split("user_script=", 1)
    values = dict(line.split("=", 1) for line in head.splitlines())
    values["user_script"] = user_script
    assert values["nodes"] == "3" and values["tasks_per_node"] == "2"
    assert (values["walltime"], values["walltime_seconds"], values["walltime_minutes"]) == \
        ("00:01:30", "90", "2")
    assert values["worker_init"] == "init" and values["scheduler_options"] == "#X opt"
    assert "run me" in values["user_script"] and "WORKERCOUNT=6" in values["user_script"]
    assert values["stdout_path"] == f"{tmp_path}/{values['jobname']}.stdout"
    # a job that left the queue without the scheduler saying more is COMPLETED, as in Parsl
    [status] = provider.status(["7"])
    assert status.state is JobState.COMPLETED and status.stdout_path == values["stdout_path"]


def test_local_provider_runs_tasks_per_node_copies_through_its_launcher(tmp_path):
    provider = LocalProvider(worker_init=f"echo init >> {tmp_path}/log")
    provider.script_dir = str(tmp_path)
    job = provider.submit(f"echo copy >> {tmp_path}/log", 2, "two")
    deadline = time.monotonic() + 10
    while not provider.status([job])[0].terminal:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert provider.status([job])[0].state is JobState.COMPLETED
    assert sorted((tmp_path / "log").read_text().split()) == ["copy", "copy", "init"]
    assert provider.cancel([job, "123"]) == [False, False]


def test_job_status_reads_the_blocks_output_as_in_parsl(tmp_path):
    provider = LocalProvider()
    provider.script_dir = str(tmp_path)
    job = provider.submit("echo said-out; echo said-err >&2", 1, "talk")
    deadline = time.monotonic() + 10
    while not provider.status([job])[0].terminal:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    [status] = provider.status([job])
    assert "said-out" in status.stdout and "said-err" in status.stderr
