"""Batch-system providers on recorded scheduler output: submit scripts as rendered, job ids
and states as parsed, and the submit/status/cancel paths end to end through an in-memory
channel that answers each batch command the way the real scheduler did (see
``data/providers/README.md`` for where every recorded answer comes from)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from celeriac.errors import ConfigurationError, ProviderError, ScaleOutFailed
from celeriac.providers import (
    CondorProvider,
    GridEngineProvider,
    JobState,
    LSFProvider,
    PBSProProvider,
    SlurmProvider,
    TorqueProvider,
)
from celeriac.providers.channels import Channel
from celeriac.providers.launchers import SimpleLauncher, SingleNodeLauncher

DATA = Path(__file__).parent / "data" / "providers"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


class RecordedChannel(Channel):
    """A Channel whose batch commands answer from a table of ``(regex, (rc, out, err))``;
    files are copied on this machine. Every command it was asked is kept in ``commands``."""

    hostname = "login.example.org"

    def __init__(self, answers: list, script_dir: str):
        self.answers = answers
        self.script_dir = script_dir
        self.commands: list[str] = []

    def execute_wait(self, cmd, timeout=None, env=None):
        self.commands.append(cmd)
        for pattern, answer in self.answers:
            if re.search(pattern, cmd):
                return answer
        return 127, "", f"bash: {cmd.split()[0]}: command not found"

    def push_file(self, source, dest_dir):
        os.makedirs(dest_dir, exist_ok=True)
        return shutil.copy(source, dest_dir)

    def pull_file(self, remote_source, local_dir):
        return self.push_file(remote_source, local_dir)

    def makedirs(self, path, mode=0o700, exist_ok=True):
        os.makedirs(path, mode=mode, exist_ok=exist_ok)


def provider_with(cls, tmp_path, answers, **options):
    channel = RecordedChannel(answers, str(tmp_path / "remote"))
    provider = cls(channel=channel, **options)
    provider.script_dir = str(tmp_path / "local")
    return provider, channel


def submitted_script(channel) -> str:
    remote = Path(channel.script_dir)
    [script] = [p for p in remote.iterdir() if p.suffix == ".submit"]
    return script.read_text()


# ---- options ------------------------------------------------------------------------------

@pytest.mark.parametrize("options, words", [
    ({"walltime": "10 minutes"}, "HH:MM:SS"),
    ({"nodes_per_block": 0}, "nodes_per_block"),
    ({"min_blocks": 3, "max_blocks": 1}, "min_blocks"),
    ({"init_blocks": 2, "max_blocks": 1}, r"init_blocks \(2\) is larger than max_blocks \(1\)"),
    ({"launcher": "srun"}, "Launcher"),
    ({"channel": "ssh://login"}, "Channel"),
])
def test_options_that_cannot_work_are_refused_with_what_to_fix(options, words):
    with pytest.raises(ConfigurationError, match=words):
        SlurmProvider(**options)


def test_defaults_follow_parsl():
    slurm, torque, pbs = SlurmProvider(), TorqueProvider(), PBSProProvider()
    assert (slurm.walltime, slurm.max_blocks, slurm.cmd_timeout, slurm.exclusive) == \
        ("00:10:00", 1, 10, True)
    assert (torque.walltime, torque.cmd_timeout) == ("00:20:00", 120)
    assert pbs.walltime == "00:20:00"
    assert GridEngineProvider().max_blocks == 10 and CondorProvider().max_blocks == 10
    # Parsl's Torque default is AprunLauncher; celeriac uses SingleNodeLauncher until it has one
    assert isinstance(torque.launcher, SingleNodeLauncher)
    assert slurm.launcher is not SlurmProvider().launcher  # no shared default instance


# ---- Slurm --------------------------------------------------------------------------------

def test_slurm_script_carries_options_and_the_launched_command(tmp_path):
    provider, channel = provider_with(
        SlurmProvider, tmp_path, [(r"^sbatch ", (0, "Submitted batch job 42\n", ""))],
        partition="debug", account="proj1", qos="high", mem_per_node=4, cores_per_node=8,
        nodes_per_block=2, walltime="01:30:00", scheduler_options="#SBATCH --gres=gpu:1",
        worker_init="module load python", launcher=SimpleLauncher())
    assert provider.submit("celeriac worker --x", 2, "celeriac.b0") == "42"
    script = submitted_script(channel)
    for line in ["#SBATCH --nodes=2", "#SBATCH --time=01:30:00", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --partition=debug", "#SBATCH --account=proj1", "#SBATCH --qos=high",
                 "#SBATCH --exclusive", "#SBATCH --mem=4g", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --gres=gpu:1", "module load python", "export PARSL_CORES=4",
                 "celeriac worker --x"]:
        assert line in script.splitlines(), line
    assert script.index("module load python") < script.index("celeriac worker --x")
    assert channel.commands[0].startswith(f"sbatch {channel.script_dir}/celeriac.b0.")


def test_slurm_submit_refused_quotes_sbatch(tmp_path):
    answer = (1, recorded("sbatch_bad_partition.out"), recorded("sbatch_bad_partition.err"))
    provider, _ = provider_with(SlurmProvider, tmp_path, [(r"^sbatch ", answer)],
                                partition="nosuch")
    with pytest.raises(ScaleOutFailed) as info:
        provider.submit("true", 1)
    assert "Invalid partition name specified" in str(info.value)
    assert "exit code 1" in str(info.value)


def test_slurm_states_and_exit_codes_from_recorded_squeue(tmp_path):
    ids = ["1", "9", "10", "11", "12"]
    provider, channel = provider_with(
        SlurmProvider, tmp_path,
        [(r"^sbatch ", (0, "Submitted batch job {}\n", "")),
         (r"^squeue ", (0, recorded("squeue_all.txt"), ""))])
    for job_id in ids:
        channel.answers[0] = (r"^sbatch ", (0, f"Submitted batch job {job_id}\n", ""))
        provider.submit("true", 1)
    failed, timeout, cancelled, completed, gone = provider.status(ids)
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    assert "NonZeroExitCode" in failed.message
    assert timeout.state is JobState.TIMEOUT
    assert cancelled.state is JobState.CANCELLED and "signal 15" in cancelled.message
    assert (completed.state, completed.exit_code) == (JobState.COMPLETED, 0)
    assert gone.state is JobState.COMPLETED and "left the scheduler's queue" in gone.message
    assert failed.stdout_path.endswith(".stdout") and failed.stderr_path.endswith(".stderr")
    squeues = [c for c in channel.commands if c.startswith("squeue")]
    assert len(squeues) == 1 and "--job 1,9,10,11,12" in squeues[0]
    provider.status(ids)  # all finished: the scheduler is not asked again
    assert len([c for c in channel.commands if c.startswith("squeue")]) == 1


def test_slurm_jobs_forgotten_by_squeue_are_resolved_by_sacct(tmp_path):
    ids = ["12", "13", "14", "15", "16", "17"]
    answers = [(r"^squeue ", (0, "", "")),
               (r"^sacct ", (0, recorded("sacct.txt"), ""))]
    provider, channel = provider_with(SlurmProvider, tmp_path, answers)
    for job_id in ids:
        channel.answers.insert(0, (r"^sbatch ", (0, f"Submitted batch job {job_id}\n", "")))
        provider.submit("true", 1)
        channel.answers.pop(0)
    statuses = provider.status(ids)
    assert [s.state for s in statuses] == [
        JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT,
        JobState.FAILED, JobState.COMPLETED]
    assert statuses[1].exit_code == 3 and "signal 15" in statuses[2].message
    assert "not known" in statuses[5].message  # sacct does not know it either


def test_slurm_without_accounting_falls_back_to_completed(tmp_path):
    answers = [(r"^sbatch ", (0, "Submitted batch job 5\n", "")), (r"^squeue ", (0, "", "")),
               (r"^sacct ", (1, "", recorded("sacct_disabled.err")))]
    provider, _ = provider_with(SlurmProvider, tmp_path, answers)
    job = provider.submit("true", 1)
    assert provider.status([job])[0].state is JobState.COMPLETED


def test_slurm_status_failure_raises_provider_error_with_scheduler_words(tmp_path):
    provider, _ = provider_with(
        SlurmProvider, tmp_path,
        [(r"^sbatch ", (0, "Submitted batch job 5\n", "")),
         (r"^squeue ", (1, "", "slurm_load_jobs error: Unable to contact slurm controller"))])
    job = provider.submit("true", 1)
    with pytest.raises(ProviderError, match="Unable to contact slurm controller"):
        provider.status([job])


def test_slurm_ids_all_aged_out_are_not_an_error(tmp_path):
    provider, _ = provider_with(
        SlurmProvider, tmp_path,
        [(r"^sbatch ", (0, "Submitted batch job 5\n", "")),
         (r"^squeue ", (1, "", "slurm_load_jobs error: Invalid job id specified\n"))])
    job = provider.submit("true", 1)
    assert provider.status([job])[0].state is JobState.COMPLETED


# ---- Grid Engine --------------------------------------------------------------------------

def test_gridengine_script_and_qsub(tmp_path):
    provider, channel = provider_with(GridEngineProvider, tmp_path,
                                      [(r"^qsub -terse ", (0, "17\n", ""))],
                                      queue="all.q", walltime="00:05:00")
    assert provider.submit("echo hi", 1) == "17"
    script = submitted_script(channel).splitlines()
    assert "#$ -l h_rt=00:05:00" in script and "#$ -q all.q" in script
    assert any(line.startswith("#$ -o ") and line.endswith(".stdout") for line in script)


def test_gridengine_unknown_queue_quotes_qsub(tmp_path):
    answer = (1, recorded("qsub_bad_queue.out"), recorded("qsub_bad_queue.err"))
    provider, _ = provider_with(GridEngineProvider, tmp_path, [(r"^qsub ", answer)])
    with pytest.raises(ScaleOutFailed, match='unknown queue "nosuchq"'):
        provider.submit("true", 1)


def test_gridengine_running_then_final_states_from_qacct(tmp_path):
    answers = [(r"^qstat", (0, recorded("qstat.txt"), "")),
               (r"^qacct -j 2$", (0, recorded("qacct_exit3.txt"), "")),
               (r"^qacct -j 1$", (0, recorded("qacct_walltime.txt"), "")),
               (r"^qacct -j 11$", (0, recorded("qacct_ok.txt"), ""))]
    provider, channel = provider_with(GridEngineProvider, tmp_path, answers)
    for job_id in ["9", "2", "1", "11"]:
        channel.answers.insert(0, (r"^qsub ", (0, f"{job_id}\n", "")))
        provider.submit("true", 1)
        channel.answers.pop(0)
    running, failed, timeout, done = provider.status(["9", "2", "1", "11"])
    assert running.state is JobState.RUNNING
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    assert timeout.state is JobState.TIMEOUT and "h_rt" in timeout.message
    assert (done.state, done.exit_code) == (JobState.COMPLETED, 0)
    assert sum(c.startswith("qstat") for c in channel.commands) == 1


# ---- PBS Pro ------------------------------------------------------------------------------

def test_pbspro_select_statement_and_qsub_options(tmp_path):
    provider, channel = provider_with(
        PBSProProvider, tmp_path, [(r"^qsub ", (0, "4101.pbs-head\n", ""))],
        queue="workq", account="proj", cpus_per_node=4, select_options="ngpus=1",
        nodes_per_block=2)
    assert provider.submit("run", 1) == "4101.pbs-head"
    script = submitted_script(channel).splitlines()
    assert "#PBS -l select=2:ncpus=4:ngpus=1" in script
    assert "#PBS -l walltime=00:20:00" in script
    assert channel.commands[0].startswith("qsub -q workq -A proj ")


def test_pbspro_states_from_recorded_json(tmp_path):
    ids = [f"410{i}.pbs-head" for i in range(1, 9)]
    answers = [(r"^qstat -f -F json -x ", (153, recorded("pbspro_qstat.json"),
                                          "qstat: Unknown Job Id 4108.pbs-head\n"))]
    provider, channel = provider_with(PBSProProvider, tmp_path, answers)
    for job_id in ids:
        channel.answers.insert(0, (r"^qsub ", (0, job_id + "\n", "")))
        provider.submit("run", 1)
        channel.answers.pop(0)
    states = [s.state for s in provider.status(ids)]
    assert states == [JobState.PENDING, JobState.RUNNING, JobState.COMPLETED, JobState.FAILED,
                      JobState.TIMEOUT, JobState.FAILED, JobState.HELD, JobState.COMPLETED]
    pending, _r, _c, failed, _t, killed, *_ = provider.status(ids)
    assert "Insufficient amount of resource" in pending.message
    assert failed.exit_code == 3 and "signal 15" in killed.message


def test_pbspro_answer_that_is_not_json_is_a_provider_error(tmp_path):
    provider, _ = provider_with(PBSProProvider, tmp_path, [
        (r"^qsub ", (0, "1.pbs\n", "")),
        (r"^qstat ", (2, "qstat: illegal option -- F\n", "usage: qstat ...\n"))])
    job = provider.submit("run", 1)
    with pytest.raises(ProviderError, match="illegal option"):
        provider.status([job])


# ---- Torque -------------------------------------------------------------------------------

def test_torque_truncated_ids_are_matched_and_unknown_ones_complete(tmp_path):
    full = [f"220{i}.torque-head.cluster.example.org" for i in range(1, 6)]
    answers = [(r"^qstat ", (153, recorded("torque_qstat.txt"), recorded("torque_qstat.err")))]
    provider, channel = provider_with(TorqueProvider, tmp_path, answers, queue="batch")
    for job_id in full:
        channel.answers.insert(0, (r"^qsub ", (0, job_id + "\n", "")))
        provider.submit("run", 2)
        channel.answers.pop(0)
    assert [s.state for s in provider.status(full)] == [
        JobState.RUNNING, JobState.PENDING, JobState.COMPLETED, JobState.HELD,
        JobState.COMPLETED]
    script = submitted_script_any(channel)
    assert "#PBS -l nodes=1:ppn=2" in script and "#PBS -l walltime=00:20:00" in script


def submitted_script_any(channel) -> str:
    return next(p for p in Path(channel.script_dir).iterdir() if p.suffix == ".submit") \
        .read_text()


# ---- LSF ----------------------------------------------------------------------------------

def test_lsf_submit_status_cancel(tmp_path):
    ids = [str(i) for i in range(5501, 5509)]
    answers = [(r"^bjobs ", (255, recorded("lsf_bjobs.txt"), recorded("lsf_bjobs.err"))),
               (r"^bkill ", (0, "Job <5501> is being terminated\n", ""))]
    provider, channel = provider_with(LSFProvider, tmp_path, answers, project="CSC100",
                                      queue="batch", walltime="00:30:00")
    for job_id in ids:
        channel.answers.insert(0, (r"^bsub ", (
            0, f"Job <{job_id}> is submitted to default queue <batch>.\n", "")))
        provider.submit("run", 1)
        channel.answers.pop(0)
    script = submitted_script_any(channel).splitlines()
    assert {"#BSUB -W 30", "#BSUB -P CSC100", "#BSUB -q batch", "#BSUB -nnodes 1"} <= set(script)
    statuses = provider.status(ids)
    assert [s.state for s in statuses] == [
        JobState.RUNNING, JobState.PENDING, JobState.COMPLETED, JobState.FAILED,
        JobState.TIMEOUT, JobState.CANCELLED, JobState.HELD, JobState.COMPLETED]
    assert statuses[3].exit_code == 3
    assert provider.cancel(["5501", "5503", "nope"]) == [True, False, False]
    assert channel.commands[-1] == "bkill 5501"


def test_lsf_cores_request_needs_both_numbers():
    with pytest.raises(ConfigurationError, match="cores_per_block and cores_per_node"):
        LSFProvider(request_by_nodes=False, cores_per_block=8)
    assert LSFProvider(request_by_nodes=False, cores_per_block=10,
                       cores_per_node=4).nodes_per_block == 3


# ---- HTCondor -----------------------------------------------------------------------------

def test_condor_submit_writes_script_and_description(tmp_path):
    provider, channel = provider_with(
        CondorProvider, tmp_path,
        [(r"^condor_submit ", (0, "Submitting job(s).\n1 job(s) submitted to cluster 7301.\n",
                               ""))],
        cores_per_slot=2, mem_per_slot=1.5, environment={"A": "it's"}, project="p",
        requirements='OpSys == "LINUX"', worker_init="source env.sh", walltime="00:10:00")
    assert provider.submit("run-worker", 1, "b0") == "7301.0"
    remote = Path(channel.script_dir)
    [desc] = [p for p in remote.iterdir() if p.suffix == ".submit"]
    [script] = [p for p in remote.iterdir() if p.suffix == ".script"]
    text = desc.read_text().splitlines()
    assert f"executable = {script}" in text and "RequestCpus = 2" in text
    assert "RequestMemory = 1536" in text and 'requirements = OpSys == "LINUX"' in text
    assert 'environment = "A=\'it\'\'s\'"' in text and "queue 1" in text
    assert any("time() - EnteredCurrentStatus > 600" in line for line in text)
    body = script.read_text()
    assert os.access(script, os.X_OK)
    assert body.index("source env.sh") < body.index("run-worker")


def test_condor_states_from_queue_then_history(tmp_path):
    ids = [f"730{i}.0" for i in range(1, 9)]
    answers = [(r"^condor_q ", (0, recorded("condor_q.txt"), "")),
               (r"^condor_history ", (0, recorded("condor_history.txt"), ""))]
    provider, channel = provider_with(CondorProvider, tmp_path, answers)
    for job_id in ids:
        channel.answers.insert(0, (r"^condor_submit ", (
            0, f"1 job(s) submitted to cluster {job_id[:-2]}.\n", "")))
        provider.submit("run", 1)
        channel.answers.pop(0)
    statuses = provider.status(ids)
    assert [s.state for s in statuses] == [
        JobState.PENDING, JobState.RUNNING, JobState.FAILED, JobState.COMPLETED,
        JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED, JobState.COMPLETED]
    assert "Permission denied" in statuses[2].message and statuses[4].exit_code == 3
    history = [c for c in channel.commands if c.startswith("condor_history")]
    assert len(history) == 1 and "7304.0" in history[0] and "7301.0" not in history[0]


def test_condor_one_node_per_block():
    with pytest.raises(ConfigurationError, match="nodes_per_block must be 1"):
        CondorProvider(nodes_per_block=2)


# ---- shared behaviour ---------------------------------------------------------------------

@pytest.mark.parametrize("cls, submit", [
    (SlurmProvider, r"^sbatch"), (GridEngineProvider, r"^qsub"), (TorqueProvider, r"^qsub"),
    (PBSProProvider, r"^qsub"), (LSFProvider, r"^bsub"), (CondorProvider, r"^condor_submit"),
])
def test_submit_without_a_job_id_and_cancel_of_unknown_ids(cls, submit, tmp_path):
    provider, channel = provider_with(cls, tmp_path, [(submit, (0, "all good\n", ""))])
    with pytest.raises(ScaleOutFailed, match="could not read a job id"):
        provider.submit("true", 1)
    commands = len(channel.commands)
    assert provider.cancel(["123", "never-submitted"]) == [False, False]
    assert len(channel.commands) == commands  # nothing to ask the scheduler
    [missing] = provider.status(["never-submitted"])
    assert missing.state is JobState.MISSING


def test_cancel_refused_for_a_running_job_is_a_provider_error(tmp_path):
    provider, _ = provider_with(SlurmProvider, tmp_path, [
        (r"^sbatch", (0, "Submitted batch job 8\n", "")),
        (r"^squeue", (0, "8|RUNNING|None|0\n", "")),
        (r"^scancel", (1, "", "scancel: error: Kill job error on job id 8: Access denied\n"))])
    job = provider.submit("true", 1)
    with pytest.raises(ProviderError, match="Access denied"):
        provider.cancel([job])


def test_cancelled_job_reports_cancelled_even_when_the_scheduler_says_completed(tmp_path):
    provider, channel = provider_with(TorqueProvider, tmp_path, [
        (r"^qsub", (0, "8.head\n", "")), (r"^qdel", (0, "", "")),
        (r"^qstat", (0, "", ""))])
    job = provider.submit("true", 1)
    assert provider.cancel([job]) == [True]
    assert provider.status([job])[0].state is JobState.CANCELLED
