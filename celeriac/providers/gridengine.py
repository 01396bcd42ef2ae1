"""GridEngineProvider: blocks are (Son of / Univa) Grid Engine jobs (qsub / qstat / qdel)."""

from __future__ import annotations

import re
import shlex
import time
from typing import Optional

from celeriac.providers.base import JobState, JobStatus
from celeriac.providers.cluster import ClusterProvider

TEMPLATE = """#!/bin/bash
#$$ -S /bin/bash
#$$ -N ${jobname}
#$$ -o ${stdout_path}
#$$ -e ${stderr_path}
#$$ -wd ${submit_script_dir}
#$$ -l h_rt=${walltime}
${scheduler_options}

${worker_init}
export JOBNAME="${jobname}"

${user_script}
"""

#: qstat's state column. Parsl's table, except: ``t`` (transferring to the host) is RUNNING
#: and ``s``/``S``/``T`` (suspended) are HELD rather than FAILED, since both pass; ``d...``
#: (deletion under way) is not finished until the job leaves the queue.
STATES = {
    "qw": JobState.PENDING, "hqw": JobState.HELD, "hrwq": JobState.HELD, "Rq": JobState.PENDING,
    "r": JobState.RUNNING, "t": JobState.RUNNING, "Rr": JobState.RUNNING,
    "Rt": JobState.RUNNING,
    "s": JobState.HELD, "ts": JobState.HELD, "S": JobState.HELD, "T": JobState.HELD,
    "Eqw": JobState.FAILED, "Ehqw": JobState.FAILED, "EhRqw": JobState.FAILED,
    "dr": JobState.RUNNING, "dt": JobState.RUNNING, "drt": JobState.RUNNING,
    "ds": JobState.RUNNING, "drs": JobState.RUNNING, "dqw": JobState.PENDING,
}

#: qacct's ``failed`` code for a job the qmaster killed at its h_rt limit
TIME_LIMIT_FAILURES = {"37"}

#: seconds a job may be absent from both qstat and qacct (accounting is written a moment
#: after the job leaves the queue) before it is taken as COMPLETED
ACCOUNTING_GRACE = 20.0


class GridEngineProvider(ClusterProvider):
    """Grid Engine blocks, Parsl's options.

    Args:
        queue: the queue (``-q``), if not the default.
        **options: the :class:`~celeriac.providers.base.ExecutionProvider` options.
            ``nodes_per_block`` > 1 needs a parallel environment in ``scheduler_options``
            (``#$ -pe NAME SLOTS``).
    """

    label = "grid_engine"
    template = TEMPLATE

    def __init__(self, queue: Optional[str] = None, **options):
        options.setdefault("max_blocks", 10)  # Parsl's default for this provider
        super().__init__(**options)
        self.queue = queue
        self._gone_since: dict[str, float] = {}

    def _job_config(self, tasks_per_node: int) -> dict:
        lines = [self.scheduler_options]
        if self.queue:
            lines.append(f"#$ -q {self.queue}")
        return {"scheduler_options": "\n".join(filter(None, lines))}

    def _submit_command(self, script_path: str) -> str:
        return f"qsub -terse {shlex.quote(script_path)}"

    def _parse_job_id(self, stdout: str) -> Optional[str]:
        # -terse prints the bare id (array jobs: "ID.1-10:1")
        match = re.search(r"^(\d+)(?:\.\S*)?$", stdout.strip(), re.MULTILINE)
        return match.group(1) if match else None

    def _query(self, job_ids: list) -> dict:
        cmd = "qstat -u '*'"
        rc, out, err = self._run(cmd)
        if rc != 0:
            raise self._query_failed(cmd, rc, out, err)
        wanted = set(job_ids)
        return {j: s for j, s in parse_qstat(out).items() if j in wanted}

    def _resolve_gone(self, job_ids: list) -> dict:
        """Ask qacct for each job that just left the queue (once: the state is then cached)."""
        result = {}
        for job_id in job_ids:
            rc, out, _err = self._run(f"qacct -j {shlex.quote(job_id)}")
            if rc == 0 and "exit_status" in out:
                self._gone_since.pop(job_id, None)
                result[job_id] = parse_qacct(out)
                continue
            first = self._gone_since.setdefault(job_id, time.monotonic())
            if time.monotonic() - first < ACCOUNTING_GRACE:
                result[job_id] = self._jobs[job_id]  # not written yet: ask again next time
            else:
                result.update(super()._resolve_gone([job_id]))
        return result

    def _cancel_command(self, job_ids: list) -> str:
        return "qdel " + " ".join(shlex.quote(j) for j in job_ids)


def parse_qstat(stdout: str) -> dict:
    """``{job id: JobStatus}`` from plain ``qstat`` (job-ID prior name user state ...)."""
    result = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[0].isdigit():
            continue  # header, ruler, blank
        state = STATES.get(parts[4], JobState.UNKNOWN)
        message = f"grid engine state {parts[4]}"
        if state is JobState.FAILED:
            message += f" (error state; `qstat -j {parts[0]}` says why)"
        result[parts[0]] = JobStatus(state, message=message)
    return result


def parse_qacct(stdout: str) -> JobStatus:
    """A finished job's JobStatus from ``qacct -j ID`` (its ``failed`` and ``exit_status``)."""
    fields = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key and key not in fields:
            fields[key] = value.strip()
    failed = fields.get("failed", "0")
    code = fields.get("exit_status", "").split()[0:1]
    exit_code = int(code[0]) if code and code[0].lstrip("-").isdigit() else None
    failed_code = failed.split()[0] if failed else "0"
    if failed_code in TIME_LIMIT_FAILURES:
        return JobStatus(JobState.TIMEOUT, message=f"walltime exceeded (qacct failed {failed})",
                         exit_code=exit_code)
    if failed_code != "0":
        return JobStatus(JobState.FAILED, message=f"qacct failed {failed}", exit_code=exit_code)
    state = JobState.COMPLETED if exit_code == 0 else JobState.FAILED
    return JobStatus(state, message=f"exit status {exit_code}", exit_code=exit_code)
