"""Launchers: the text each one generates, run for real with bash where its tool exists here.

Simple, Wrapped, SingleNode, GnuParallel (``parallel``) and MpiExec/MpiRun (mpich) are run as
a block's job script would run them: N copies must run, and a failing copy must fail the
block as the launcher promises. srun, aprun and jsrun have no server on this machine, so for
them the exact command lines are checked (the Slurm integration runs SrunLauncher for real).
"""

import inspect
import logging
import os
import shutil
import subprocess

import pytest

import celeriac.launchers as launchers
from celeriac.launchers import (
    AprunLauncher,
    GnuParallelLauncher,
    JsrunLauncher,
    MpiExecLauncher,
    MpiRunLauncher,
    SimpleLauncher,
    SingleNodeLauncher,
    SrunLauncher,
    SrunMPILauncher,
    WrappedLauncher,
)

# Parsl's constructor arguments, name for name (parsl/launchers/launchers.py)
PARSL_SIGNATURES = {
    SimpleLauncher: ["debug"],
    WrappedLauncher: ["prepend", "debug"],
    SingleNodeLauncher: ["debug", "fail_on_any"],
    GnuParallelLauncher: ["debug"],
    MpiExecLauncher: ["debug", "bind_cmd", "overrides"],
    MpiRunLauncher: ["debug", "bash_location", "overrides"],
    SrunLauncher: ["debug", "overrides"],
    SrunMPILauncher: ["debug", "overrides"],
    AprunLauncher: ["debug", "overrides"],
    JsrunLauncher: ["debug", "overrides"],
}


def run_block(script: str, cwd, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run launcher text as a job script does: bash, in the job's directory, no node file."""
    env = {k: v for k, v in os.environ.items() if k not in ("PBS_NODEFILE", "JOBNAME")}
    path = cwd / "job.sh"
    path.write_text("#!/bin/bash\n" + script)
    return subprocess.run(["bash", str(path)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def copies(out) -> list:
    return out.read_text().split() if out.exists() else []


@pytest.fixture(scope="module")
def tool():
    """Skip unless a command is installed (tests/scripts/install_test_packages.sh installs it)."""
    def need(command: str, package: str):
        if not shutil.which(command):
            pytest.skip(f"{command} is not installed: install Debian's {package}, or run "
                        "tests/scripts/install_test_packages.sh as root (CI does)")
    return need


def test_every_parsl_launcher_is_exported_with_parsl_arguments():
    assert set(PARSL_SIGNATURES) <= {getattr(launchers, n) for n in launchers.__all__}
    for cls, names in PARSL_SIGNATURES.items():
        params = list(inspect.signature(cls.__init__).parameters)[1:]
        assert sorted(params) == sorted(names), cls.__name__


def test_every_launcher_builds_valid_bash():
    cmd = "echo \"it's $1\" `hostname` $(date)"
    for cls in PARSL_SIGNATURES:
        for debug in (True, False):
            launcher = cls("time", debug=debug) if cls is WrappedLauncher else cls(debug=debug)
            text = launcher(cmd, 2, 3)
            check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
            assert check.returncode == 0, (cls.__name__, check.stderr)


# -- Simple and Wrapped: one copy ------------------------------------------------------------

@pytest.mark.timeout(30)
def test_simple_launcher_runs_the_command_once_and_keeps_its_exit_code(tmp_path):
    out = tmp_path / "out"
    assert run_block(SimpleLauncher()(f"echo one >> {out}", 4, 1), tmp_path).returncode == 0
    assert copies(out) == ["one"]
    assert run_block(SimpleLauncher()("exit 7", 1, 1), tmp_path).returncode == 7


def test_simple_launcher_warns_that_it_starts_one_copy_for_many_nodes(caplog):
    with caplog.at_level(logging.WARNING):
        SimpleLauncher()("true", 1, 3)
    assert "3 nodes" in caplog.text


@pytest.mark.timeout(30)
def test_wrapped_launcher_runs_the_command_behind_its_prefix(tmp_path):
    out = tmp_path / "out"
    wrapped = WrappedLauncher("env CELERIAC_WRAPPED=yes")
    text = wrapped(f"bash -c 'echo $CELERIAC_WRAPPED >> {out}'", 1, 1)
    assert run_block(text, tmp_path).returncode == 0
    assert copies(out) == ["yes"]
    assert run_block(WrappedLauncher("time")("exit 5", 1, 1), tmp_path).returncode == 5


# -- SingleNode: copies in the background ----------------------------------------------------

@pytest.mark.timeout(30)
def test_single_node_runs_tasks_per_node_times_nodes_numbered_copies(tmp_path):
    out = tmp_path / "out"
    done = run_block(SingleNodeLauncher()(f"echo $1 >> {out}", 2, 3), tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(copies(out), key=int) == ["1", "2", "3", "4", "5", "6"]
    assert "Found cores" in done.stdout


@pytest.mark.timeout(30)
def test_single_node_expands_variables_in_each_copy(tmp_path):
    out = tmp_path / "out"
    text = SingleNodeLauncher()(f"echo $BASHPID >> {out}", 3, 1)
    assert run_block(text, tmp_path).returncode == 0
    assert len(set(copies(out))) == 3


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fail_on_any, failing, expected", [
    (False, "2", 0),        # some copies ran: the block is alive
    (True, "2", 1),         # any failure fails the block
    (False, "*", 1),        # all failed
    (True, "none", 0),
])
def test_single_node_exit_code_follows_fail_on_any(tmp_path, fail_on_any, failing, expected):
    out = tmp_path / "out"
    cmd = f'echo $1 >> {out}; case $1 in {failing}) exit 3;; esac'
    done = run_block(SingleNodeLauncher(fail_on_any=fail_on_any)(cmd, 3, 1), tmp_path)
    assert done.returncode == expected
    assert len(copies(out)) == 3  # a failed copy does not stop the others being waited for


@pytest.mark.timeout(30)
def test_single_node_without_debug_is_quiet_and_succeeds(tmp_path):
    done = run_block(SingleNodeLauncher(debug=False)("true", 2, 1), tmp_path)
    assert done.returncode == 0 and done.stdout == ""


# -- GNU parallel --------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_gnu_parallel_runs_numbered_copies_on_this_host(tmp_path, tool):
    tool("parallel", "parallel")
    out = tmp_path / "out"
    done = run_block(GnuParallelLauncher()(f"echo $1 $BASHPID >> {out}", 2, 2), tmp_path)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == ["1", "2", "3", "4"]
    assert len({line.split()[1] for line in lines}) == 4
    assert (tmp_path / "celeriac.parallel.log").exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("debug", [True, False])
def test_gnu_parallel_block_fails_when_a_copy_fails(tmp_path, tool, debug):
    tool("parallel", "parallel")
    out = tmp_path / "out"
    cmd = f"echo $1 >> {out}; [ $1 != 2 ]"
    assert run_block(GnuParallelLauncher(debug=debug)(cmd, 3, 1), tmp_path).returncode != 0
    assert len(copies(out)) == 3
    assert run_block(GnuParallelLauncher(debug=debug)("true", 3, 1), tmp_path).returncode == 0


# -- MPI: mpich's mpiexec / mpirun on this host ----------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("debug", [True, False])
def test_mpiexec_runs_a_copy_per_rank_with_overrides(tmp_path, tool, debug):
    tool("mpiexec", "mpich")
    out = tmp_path / "out"
    launcher = MpiExecLauncher(debug=debug, overrides="-genv CELERIAC_MPI_FLAG on")
    done = run_block(launcher(f"echo $PMI_RANK$CELERIAC_MPI_FLAG >> {out}", 2, 2), tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(copies(out)) == ["0on", "1on", "2on", "3on"]
    assert ("mpiexec --bind-to none -genv CELERIAC_MPI_FLAG on -n $WORKERCOUNT"
            in launcher("x", 1, 1))


@pytest.mark.timeout(120)
def test_mpiexec_block_fails_when_a_copy_fails(tmp_path, tool):
    tool("mpiexec", "mpich")
    done = run_block(MpiExecLauncher()('[ "$PMI_RANK" != 1 ]', 3, 1), tmp_path)
    assert done.returncode != 0


@pytest.mark.timeout(120)
def test_mpirun_runs_np_copies_and_propagates_failure(tmp_path, tool):
    tool("mpirun", "mpich")
    out = tmp_path / "out"
    launcher = MpiRunLauncher(overrides="-genv CELERIAC_MPI_FLAG on")
    done = run_block(launcher(f"echo $PMI_RANK$CELERIAC_MPI_FLAG >> {out}", 3, 1), tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(copies(out)) == ["0on", "1on", "2on"]
    assert run_block(launcher('[ "$PMI_RANK" != 0 ]', 2, 1), tmp_path).returncode != 0


# -- srun, aprun, jsrun: the command lines ---------------------------------------------------

def launch_line(text: str, starter: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(starter)]
    assert len(lines) == 1, text
    return lines[0]


def test_srun_launches_one_step_with_tasks_per_node_on_every_node():
    text = SrunLauncher(overrides="--cpu-bind=none")("celeriac worker", 1, 4)
    assert launch_line(text, "srun ") == (
        'srun --ntasks=4 --ntasks-per-node=1 -l --cpu-bind=none bash -c "$CMD"')
    assert "celeriac worker\n" in text
    two = SrunLauncher()("celeriac worker", 2, 3)
    assert launch_line(two, "srun ") == 'srun --ntasks=6 --ntasks-per-node=2 -l bash -c "$CMD"'


def test_srun_mpi_starts_one_step_per_worker_and_waits_for_each():
    text = SrunMPILauncher(overrides="--mpi=pmi2")("celeriac worker", 2, 2)
    assert launch_line(text, "srun ") == 'srun $STEP -l --mpi=pmi2 bash -c "$CMD" &'
    assert "TASKBLOCKS=4" in text
    assert 'for PID in $PIDS; do wait "$PID" || FAILED=1; done' in text
    assert "exit $FAILED" in text


def test_aprun_and_jsrun_place_counts_and_overrides():
    aprun = AprunLauncher(overrides="-d 4")("celeriac worker", 2, 3)
    assert launch_line(aprun, "aprun ") == 'aprun -n 6 -N 2 -d 4 /bin/bash -c "$CMD"'
    jsrun = JsrunLauncher(overrides="-c ALL_CPUS")("celeriac worker", 1, 5)
    assert launch_line(jsrun, "jsrun ") == 'jsrun -n 5 -r 1 -c ALL_CPUS /bin/bash -c "$CMD"'


@pytest.mark.parametrize("cls", [SrunLauncher, SrunMPILauncher, AprunLauncher, JsrunLauncher,
                                 MpiExecLauncher, MpiRunLauncher, GnuParallelLauncher])
def test_command_reaches_each_copy_unexpanded(cls, tmp_path):
    # the launch line is cut off, so the script only reads the command into $CMD: it must
    # hold the text verbatim ($VARS and quotes for each copy to expand, not the job script)
    cmd = "echo \"$SLURM_PROCID\" 'single' `hostname` $(( 1 + 1 ))"
    text = cls(debug=False)(cmd, 1, 1)
    head = text[:text.index("CELERIAC_LAUNCHER_CMD_EOF\n", text.index(cmd)) + 26]
    shown = subprocess.run(["bash", "-c", head + 'printf %s "$CMD"'], capture_output=True,
                           text=True, cwd=tmp_path)
    assert shown.stdout.rstrip("\n") == cmd
