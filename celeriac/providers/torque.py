"""TorqueProvider: blocks are Torque/PBS jobs (qsub / qstat / qdel)."""

from __future__ import annotations

import re
import shlex
from typing import Optional

from celeriac.providers.base import JobState, JobStatus
from celeriac.providers.cluster import ClusterProvider

TEMPLATE = """#!/bin/bash
#PBS -S /bin/bash
#PBS -N ${jobname}
#PBS -m n
#PBS -l walltime=${walltime}
#PBS -l nodes=${nodes}:ppn=${tasks_per_node}
#PBS -o ${stdout_path}
#PBS -e ${stderr_path}
${scheduler_options}

${worker_init}
export JOBNAME="${jobname}"

${user_script}
"""

#: qstat's ``S`` column (Torque's qstat(1B)); as Parsl, E (exiting) counts as COMPLETED
STATES = {
    "B": JobState.RUNNING, "R": JobState.RUNNING, "C": JobState.COMPLETED,
    "E": JobState.COMPLETED, "H": JobState.HELD, "Q": JobState.PENDING,
    "W": JobState.PENDING, "T": JobState.PENDING, "S": JobState.HELD,
}


class TorqueProvider(ClusterProvider):
    """Torque blocks, Parsl's options.

    Args:
        account: charged account (``qsub -A``).
        queue: the queue (``qsub -q``).
        **options: the :class:`~celeriac.providers.base.ExecutionProvider` options.
            Parsl's default launcher here is AprunLauncher, which celeriac does not have yet:
            the default is SingleNodeLauncher; pass any Launcher.
    """

    label = "torque"
    template = TEMPLATE

    def __init__(self, account: Optional[str] = None, queue: Optional[str] = None, **options):
        options.setdefault("walltime", "00:20:00")
        options.setdefault("cmd_timeout", 120)
        super().__init__(**options)
        self.account = account
        self.queue = queue

    def _submit_command(self, script_path: str) -> str:
        parts = ["qsub"]
        if self.queue:
            parts += ["-q", shlex.quote(self.queue)]
        if self.account:
            parts += ["-A", shlex.quote(self.account)]
        return " ".join(parts + [shlex.quote(script_path)])

    def _parse_job_id(self, stdout: str) -> Optional[str]:
        # qsub prints the id alone: "1234.server"
        match = re.search(r"^(\d+(?:\.\S+)?)$", stdout.strip(), re.MULTILINE)
        return match.group(1) if match else None

    def _query(self, job_ids: list) -> dict:
        cmd = "qstat " + " ".join(shlex.quote(j) for j in job_ids)
        rc, out, err = self._run(cmd)
        found = match_ids(parse_qstat(out), job_ids)
        # qstat exits 153 when one of the ids is unknown (it finished) but still lists the rest
        if rc != 0 and not found and "Unknown Job Id" not in err:
            raise self._query_failed(cmd, rc, out, err)
        return found

    def _cancel_command(self, job_ids: list) -> str:
        return "qdel " + " ".join(shlex.quote(j) for j in job_ids)


def parse_qstat(stdout: str) -> dict:
    """``{id as printed: JobStatus}`` from Torque's plain qstat table
    (``Job ID  Name  User  Time Use  S  Queue``)."""
    result = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[0].upper().startswith("JOB") or parts[0].startswith("---"):
            continue
        result[parts[0]] = JobStatus(STATES.get(parts[4], JobState.UNKNOWN),
                                     message=f"qstat state {parts[4]}")
    return result


def match_ids(found: dict, job_ids: list) -> dict:
    """Key ``found`` by our full job ids: qstat truncates long ids ("1234.login-node.exa...")
    and the JSON output drops nothing, so match by prefix."""
    result = {}
    for printed, status in found.items():
        stem = printed.rstrip(".")
        for job_id in job_ids:
            if job_id == printed or job_id.startswith(stem):
                result[job_id] = status
                break
    return result
