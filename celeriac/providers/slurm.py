"""SlurmProvider: blocks are Slurm batch jobs (sbatch / squeue / scancel)."""

from __future__ import annotations

import math
import re
import shlex
from typing import Optional

from celeriac.providers.base import JobState, JobStatus
from celeriac.providers.cluster import ClusterProvider

TEMPLATE = """#!/bin/bash
#SBATCH --job-name=${jobname}
#SBATCH --output=${stdout_path}
#SBATCH --error=${stderr_path}
#SBATCH --nodes=${nodes}
#SBATCH --time=${walltime}
#SBATCH --ntasks-per-node=${tasks_per_node}
${scheduler_options}

${worker_init}
export JOBNAME="${jobname}"

${user_script}
"""

#: squeue's long state names (``-O State``), as Parsl maps their short forms
STATES = {
    "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING,
    "REQUEUED": JobState.PENDING, "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.HELD, "RESV_DEL_HOLD": JobState.HELD,
    "SUSPENDED": JobState.HELD, "STOPPED": JobState.HELD,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING, "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "CANCELLED": JobState.CANCELLED,
    "FAILED": JobState.FAILED, "NODE_FAIL": JobState.FAILED, "BOOT_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED, "SPECIAL_EXIT": JobState.FAILED,
    "REVOKED": JobState.FAILED, "PREEMPTED": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT, "DEADLINE": JobState.TIMEOUT,
}

# `-t all` keeps finished jobs in the answer (until MinJobAge), so a job that ended is seen
# with its final state and exit status instead of just vanishing as with plain squeue.
SQUEUE = "squeue --noheader -t all -O 'JobID:|,State:|,Reason:|,exit_code' --job {ids}"
#: for jobs slurmctld has forgotten (older than MinJobAge), where accounting is enabled
SACCT = "sacct --noheader --parsable2 --allocations -o JobID,State,ExitCode -j {ids}"


class SlurmProvider(ClusterProvider):
    """Slurm blocks, Parsl's options.

    Args:
        partition, account, qos, constraint: ``#SBATCH`` directives, added when not None.
        exclusive: ask for whole nodes (``--exclusive``), as Parsl does by default.
        cores_per_node: CPUs per node; sets ``--cpus-per-task`` (divided among the tasks)
            and ``PARSL_CORES``.
        mem_per_node: memory per node in GB (``--mem``, ``PARSL_MEMORY_GB``).
        regex_job_id: finds the id in sbatch's output (group ``id``).
        **options: the :class:`~celeriac.providers.base.ExecutionProvider` options.
    """

    label = "slurm"
    template = TEMPLATE

    def __init__(self, partition: Optional[str] = None, account: Optional[str] = None,
                 qos: Optional[str] = None, constraint: Optional[str] = None,
                 exclusive: bool = True, cores_per_node: Optional[int] = None,
                 mem_per_node: Optional[int] = None,
                 regex_job_id: str = r"Submitted batch job (?P<id>\S+)", **options):
        super().__init__(**options)
        self.partition = partition
        self.account = account
        self.qos = qos
        self.constraint = constraint
        self.exclusive = exclusive
        self.cores_per_node = cores_per_node
        self.mem_per_node = mem_per_node
        self.regex_job_id = regex_job_id

    def _job_config(self, tasks_per_node: int) -> dict:
        lines = [self.scheduler_options]
        init = [self.worker_init]
        if self.exclusive:
            lines.append("#SBATCH --exclusive")
        for flag, value in (("partition", self.partition), ("account", self.account),
                            ("qos", self.qos), ("constraint", self.constraint)):
            if value:
                lines.append(f"#SBATCH --{flag}={value}")
        if self.mem_per_node is not None:
            lines.append(f"#SBATCH --mem={self.mem_per_node}g")
            init.append(f"export PARSL_MEMORY_GB={self.mem_per_node}")
        if self.cores_per_node is not None:
            cpus = max(1, math.floor(self.cores_per_node / tasks_per_node))
            lines.append(f"#SBATCH --cpus-per-task={cpus}")
            init.append(f"export PARSL_CORES={cpus}")
        return {"scheduler_options": "\n".join(filter(None, lines)),
                "worker_init": "\n".join(filter(None, init))}

    def _submit_command(self, script_path: str) -> str:
        return f"sbatch {shlex.quote(script_path)}"

    def _parse_job_id(self, stdout: str) -> Optional[str]:
        for line in stdout.splitlines():
            match = re.search(self.regex_job_id, line)
            if match:
                return match.group("id")
        return None

    def _query(self, job_ids: list) -> dict:
        cmd = SQUEUE.format(ids=",".join(job_ids))
        rc, out, err = self._run(cmd)
        if rc != 0:
            # every id aged out of slurmctld (MinJobAge): nothing to report, not an error
            if "Invalid job id" in err + out:
                return {}
            raise self._query_failed(cmd, rc, out, err)
        return parse_squeue(out)

    def _resolve_gone(self, job_ids: list) -> dict:
        """Ask sacct (one call) about jobs squeue has forgotten; without accounting
        ("accounting storage is disabled") fall back to Parsl's COMPLETED."""
        rc, out, _err = self._run(SACCT.format(ids=",".join(job_ids)))
        found = parse_sacct(out) if rc == 0 else {}
        found = {j: s for j, s in found.items() if j in job_ids}
        found.update(super()._resolve_gone([j for j in job_ids if j not in found]))
        return found

    def _cancel_command(self, job_ids: list) -> str:
        return "scancel " + " ".join(shlex.quote(j) for j in job_ids)

    @property
    def status_polling_interval(self) -> float:
        return 60.0


def parse_squeue(stdout: str) -> dict:
    """``{job id: JobStatus}`` from ``squeue -O 'JobID:|,State:|,Reason:|,exit_code'``.

    ``exit_code`` is the raw wait status: exit code in the high byte, signal in the low bits.
    """
    result = {}
    for line in stdout.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 4 or not fields[0]:
            continue
        job_id, state_name, reason, raw = fields[:4]
        state = STATES.get(state_name.split()[0], JobState.UNKNOWN)
        exit_code = signal = None
        if raw.isdigit() and state.terminal:
            signal = int(raw) & 0x7F
            exit_code = None if signal else int(raw) >> 8
        message = f"slurm state {state_name}"
        if reason and reason != "None":
            message += f" ({reason})"
        if signal:
            message += f", killed by signal {signal}"
        result[job_id] = JobStatus(state, message=message, exit_code=exit_code)
    return result


def parse_sacct(stdout: str) -> dict:
    """``{job id: JobStatus}`` from ``sacct --parsable2 --allocations -o JobID,State,ExitCode``
    (ExitCode is ``code:signal``; State may read ``CANCELLED by 1000``)."""
    result = {}
    for line in stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 3 or not fields[0]:
            continue
        job_id, state_name, code = fields[:3]
        state = STATES.get(state_name.split()[0] if state_name else "", JobState.UNKNOWN)
        exit_code, _, signal = code.partition(":")
        message = f"slurm state {state_name} (from sacct)"
        if signal and signal != "0":
            message += f", killed by signal {signal}"
        result[job_id] = JobStatus(state, message=message,
                                   exit_code=int(exit_code) if exit_code.isdigit() else None)
    return result
