"""PBSProProvider: blocks are PBS Professional / OpenPBS jobs (qsub / qstat -f -F json / qdel)."""

from __future__ import annotations

import json
import shlex
from typing import Optional

from celeriac.providers.base import JobState, JobStatus
from celeriac.providers.torque import STATES as TORQUE_STATES
from celeriac.providers.torque import TorqueProvider, match_ids

TEMPLATE = """#!/bin/bash
#PBS -S /bin/bash
#PBS -N ${jobname}
#PBS -m n
#PBS -l walltime=${walltime}
#PBS -l select=${nodes}:ncpus=${ncpus}${select_options}
#PBS -o ${stdout_path}
#PBS -e ${stderr_path}
${scheduler_options}

${worker_init}
export JOBNAME="${jobname}"

${user_script}
"""

#: job_state letters of PBS Pro (Reference Guide, "Job States"); F = finished (``qstat -x``).
#: Unlike Torque, E (exiting) is RUNNING: the job still holds its nodes and reaches F next.
STATES = {**TORQUE_STATES, "F": JobState.COMPLETED, "X": JobState.COMPLETED,
          "E": JobState.RUNNING, "M": JobState.PENDING, "U": JobState.HELD}

#: PBS Pro's negative Exit_status for a job killed at its walltime (JOB_EXEC_KILL_WALLTIME)
EXIT_WALLTIME = -29


class PBSProProvider(TorqueProvider):
    """PBS Pro blocks, Parsl's options.

    Args:
        account, queue: as for :class:`TorqueProvider`.
        cpus_per_node: ``ncpus`` in the ``select`` statement.
        select_options: appended to ``-l select=N:ncpus=C`` (e.g. ``"ngpus=1"``).
        **options: the :class:`~celeriac.providers.base.ExecutionProvider` options.
    """

    label = "pbspro"
    template = TEMPLATE

    def __init__(self, account: Optional[str] = None, queue: Optional[str] = None,
                 cpus_per_node: int = 1, select_options: str = "", **options):
        super().__init__(account=account, queue=queue, **options)
        self.cpus_per_node = cpus_per_node
        self.select_options = select_options

    def _job_config(self, tasks_per_node: int) -> dict:
        select = self.select_options
        if select and not select.startswith(":"):
            select = ":" + select
        return {"ncpus": self.cpus_per_node, "select_options": select}

    def _query(self, job_ids: list) -> dict:
        # -x: finished jobs stay visible (job history), with their Exit_status
        cmd = "qstat -f -F json -x " + " ".join(shlex.quote(j) for j in job_ids)
        rc, out, err = self._run(cmd)
        try:
            found = match_ids(parse_qstat_json(out), job_ids) if out.strip() else {}
        except ValueError as exc:
            raise self._query_failed(cmd, rc, out, err) from exc
        if rc != 0 and not found and "Unknown Job Id" not in err:
            raise self._query_failed(cmd, rc, out, err)
        return found


def parse_qstat_json(stdout: str) -> dict:
    """``{job id: JobStatus}`` from ``qstat -f -F json [-x]``."""
    jobs = json.loads(stdout).get("Jobs", {})
    result = {}
    for job_id, job in jobs.items():
        letter = job.get("job_state", "")
        state = STATES.get(letter, JobState.UNKNOWN)
        exit_code = job.get("Exit_status")
        message = f"PBS job_state {letter}"
        if letter == "F" and exit_code is not None:
            if exit_code == EXIT_WALLTIME:
                state, message = JobState.TIMEOUT, "killed at its walltime"
            elif exit_code >= 256:  # 256 + signal: killed (qdel sends SIGTERM)
                state, message = JobState.FAILED, f"killed by signal {exit_code - 256}"
            elif exit_code != 0:
                state = JobState.FAILED
                message = f"exit status {exit_code}"
        comment = job.get("comment")
        if comment:
            message += f" ({comment})"
        result[job_id] = JobStatus(state, message=message, exit_code=exit_code)
    return result
