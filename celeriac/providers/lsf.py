"""LSFProvider: blocks are IBM Spectrum LSF jobs (bsub / bjobs / bkill)."""

from __future__ import annotations

import math
import re
import shlex
from typing import Optional

from celeriac.errors import ConfigurationError
from celeriac.providers.base import JobState, JobStatus
from celeriac.providers.cluster import ClusterProvider

TEMPLATE = """#!/bin/bash
#BSUB -J ${jobname}
#BSUB -W ${walltime_minutes}
#BSUB -o ${stdout_path}
#BSUB -e ${stderr_path}
${scheduler_options}

${worker_init}
export JOBNAME="${jobname}"

${user_script}
"""

#: bjobs' STAT column, as Parsl; suspended jobs are HELD (they resume), not CANCELLED
STATES = {
    "PEND": JobState.PENDING, "WAIT": JobState.PENDING, "PROV": JobState.PENDING,
    "RUN": JobState.RUNNING, "DONE": JobState.COMPLETED, "EXIT": JobState.FAILED,
    "PSUSP": JobState.HELD, "USUSP": JobState.HELD, "SSUSP": JobState.HELD,
    "ZOMBI": JobState.FAILED, "UNKWN": JobState.UNKNOWN,
}

#: ``-a`` keeps recently finished jobs; ``exit_reason`` tells a run-limit kill (TERM_RUNLIMIT)
#: from a failure, since the exit code of a killed job is site-dependent (often 140)
BJOBS = "bjobs -a -noheader -o \"jobid stat exit_code exit_reason delimiter='|'\" {ids}"


class LSFProvider(ClusterProvider):
    """LSF blocks, Parsl's options.

    Args:
        project: charged project (``-P``). queue: the queue (``-q``).
        request_by_nodes: ask for ``-nnodes nodes_per_block`` (True, as Parsl) or for
            ``cores_per_block`` cores spread ``cores_per_node`` per host.
        cores_per_block, cores_per_node: used when ``request_by_nodes`` is False.
        bsub_redirection: submit with ``bsub < script`` (LSF then reads the #BSUB lines
            on every version) instead of ``bsub script``.
        **options: the :class:`~celeriac.providers.base.ExecutionProvider` options.
    """

    label = "LSF"
    template = TEMPLATE

    def __init__(self, project: Optional[str] = None, queue: Optional[str] = None,
                 request_by_nodes: bool = True, cores_per_block: Optional[int] = None,
                 cores_per_node: Optional[int] = None, bsub_redirection: bool = False,
                 **options):
        options.setdefault("cmd_timeout", 120)
        if not request_by_nodes:
            if not cores_per_block or not cores_per_node:
                raise ConfigurationError("LSFProvider(request_by_nodes=False) needs "
                                         "cores_per_block and cores_per_node (both > 0)")
            options["nodes_per_block"] = math.ceil(cores_per_block / cores_per_node)
        super().__init__(**options)
        self.project = project
        self.queue = queue
        self.request_by_nodes = request_by_nodes
        self.cores_per_block = cores_per_block
        self.cores_per_node = cores_per_node
        self.bsub_redirection = bsub_redirection

    def _job_config(self, tasks_per_node: int) -> dict:
        lines = [self.scheduler_options]
        if self.project:
            lines.append(f"#BSUB -P {self.project}")
        if self.queue:
            lines.append(f"#BSUB -q {self.queue}")
        if self.request_by_nodes:
            lines.append(f"#BSUB -nnodes {self.nodes_per_block}")
        else:
            lines.append(f"#BSUB -n {self.cores_per_block}")
            lines.append(f'#BSUB -R "span[ptile={self.cores_per_node}]"')
        return {"scheduler_options": "\n".join(filter(None, lines))}

    def _submit_command(self, script_path: str) -> str:
        return f"bsub {'< ' if self.bsub_redirection else ''}{shlex.quote(script_path)}"

    def _parse_job_id(self, stdout: str) -> Optional[str]:
        match = re.search(r"Job <(\d+)> is submitted", stdout)
        return match.group(1) if match else None

    def _query(self, job_ids: list) -> dict:
        cmd = BJOBS.format(ids=" ".join(shlex.quote(j) for j in job_ids))
        rc, out, err = self._run(cmd)
        found = parse_bjobs(out)
        # bjobs exits 255 if any id is unknown ("Job <N> is not found") yet lists the others
        if rc != 0 and not found and "is not found" not in err + out:
            raise self._query_failed(cmd, rc, out, err)
        return {j: s for j, s in found.items() if j in job_ids}

    def _cancel_command(self, job_ids: list) -> str:
        return "bkill " + " ".join(shlex.quote(j) for j in job_ids)


def parse_bjobs(stdout: str) -> dict:
    """``{job id: JobStatus}`` from ``bjobs -o "jobid stat exit_code exit_reason
    delimiter='|'" -noheader`` (``-`` marks an empty field)."""
    result = {}
    for line in stdout.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        job_id, stat, code, reason = fields[:4]
        state = STATES.get(stat, JobState.UNKNOWN)
        exit_code = int(code) if code.lstrip("-").isdigit() else None
        if state is JobState.COMPLETED:
            exit_code = 0
        message = f"LSF {stat}" + (f" ({reason})" if reason not in ("", "-") else "")
        if state is JobState.FAILED and "TERM_RUNLIMIT" in reason:
            state = JobState.TIMEOUT
        elif state is JobState.FAILED and "TERM_OWNER" in reason:
            state = JobState.CANCELLED
        result[job_id] = JobStatus(state, message=message, exit_code=exit_code)
    return result
