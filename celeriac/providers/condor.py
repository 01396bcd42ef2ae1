"""CondorProvider: blocks are HTCondor jobs (condor_submit / condor_q / condor_rm)."""

from __future__ import annotations

import os
import re
import shlex
from typing import Optional

from celeriac.errors import ConfigurationError
from celeriac.providers.base import JobState, JobStatus
from celeriac.providers.cluster import ClusterProvider

#: the submit description; the block's script is a separate executable file
TEMPLATE = """universe = vanilla
executable = ${job_script}
output = ${stdout_path}
error = ${stderr_path}
log = ${submit_script_dir}/${jobname}.log
initialdir = ${submit_script_dir}
environment = "${environment}"
+ProjectName = "${project}"
${requirements}
# Condor has no walltime: remove a block that has run longer than it
periodic_remove = (JobStatus == 2) && (time() - EnteredCurrentStatus > ${walltime_seconds})
${scheduler_options}
queue 1
"""

#: JobStatus codes (HTCondor manual, "Job ClassAd Attributes"); held is FAILED as in Parsl,
#: since a held block never starts workers without a person stepping in
STATES = {"1": JobState.PENDING, "2": JobState.RUNNING, "3": JobState.CANCELLED,
          "4": JobState.COMPLETED, "5": JobState.FAILED, "6": JobState.RUNNING,
          "7": JobState.HELD}

ATTRIBUTES = "-af:j JobStatus ExitCode RemoveReason HoldReason"


class CondorProvider(ClusterProvider):
    """HTCondor blocks, Parsl's options.

    Args:
        cores_per_slot, mem_per_slot: ``RequestCpus`` / ``RequestMemory`` (GB), and
            ``PARSL_CORES`` / ``PARSL_MEMORY_GB`` for the workers.
        environment: variables set for the block's script.
        project: ``+ProjectName``. requirements: a Condor ``requirements`` expression.
        transfer_input_files: extra files sent with the job.
        **options: the :class:`~celeriac.providers.base.ExecutionProvider` options.
            One node per block: Condor schedules slots, not nodes.
    """

    label = "condor"
    template = TEMPLATE

    def __init__(self, cores_per_slot: Optional[int] = None,
                 mem_per_slot: Optional[float] = None, environment: Optional[dict] = None,
                 project: str = "", requirements: str = "",
                 transfer_input_files: Optional[list] = None, **options):
        options.setdefault("max_blocks", 10)
        options.setdefault("cmd_timeout", 60)
        if options.get("nodes_per_block", 1) != 1:
            raise ConfigurationError("CondorProvider runs one slot per block: "
                                     "nodes_per_block must be 1")
        super().__init__(**options)
        self.cores_per_slot = cores_per_slot
        self.mem_per_slot = mem_per_slot
        self.environment = dict(environment or {})
        self.project = project
        self.requirements = requirements
        self.transfer_input_files = list(transfer_input_files or [])

    def _job_config(self, tasks_per_node: int) -> dict:
        lines, init = [self.scheduler_options], [self.worker_init]
        if self.mem_per_slot is not None:
            lines.append(f"RequestMemory = {int(self.mem_per_slot * 1024)}")
            init.append(f"export PARSL_MEMORY_GB={self.mem_per_slot}")
        if self.cores_per_slot is not None:
            lines.append(f"RequestCpus = {self.cores_per_slot}")
            init.append(f"export PARSL_CORES={self.cores_per_slot}")
        if self.transfer_input_files:
            lines.append("transfer_input_files = " + ",".join(self.transfer_input_files))
        # condor_submit's quoted environment: space separated, ' quotes a value, '' escapes '
        env = " ".join(f"{k}='{str(v).replace(chr(39), chr(39) * 2)}'"
                       for k, v in self.environment.items())
        return {"scheduler_options": "\n".join(filter(None, lines)),
                "worker_init": "\n".join(filter(None, init)), "environment": env,
                "project": self.project,
                "requirements": f"requirements = {self.requirements}" if self.requirements
                else ""}

    def _write_scripts(self, name: str, config: dict, local_dir: str) -> list:
        """The block's script (worker_init + launched command) and the submit description."""
        script = os.path.join(local_dir, f"{name}.script")
        with open(script, "w") as fh:
            fh.write(f"#!/bin/bash\n{config['worker_init']}\nexport JOBNAME=\"{name}\"\n"
                     f"{config['user_script']}\n")
        os.chmod(script, 0o755)
        config = {**config, "job_script": f"{config['submit_script_dir']}/{name}.script"}
        return [script] + super()._write_scripts(name, config, local_dir)

    def _submit_command(self, script_path: str) -> str:
        return f"condor_submit {shlex.quote(script_path)}"

    def _parse_job_id(self, stdout: str) -> Optional[str]:
        match = re.search(r"(\d+) job\(s\) submitted to cluster (\d+)\.", stdout)
        return f"{match.group(2)}.0" if match else None

    def _query(self, job_ids: list) -> dict:
        return self._ask("condor_q", job_ids)

    def _resolve_gone(self, job_ids: list) -> dict:
        """Finished jobs leave the queue; condor_history still has their exit code."""
        found = self._ask("condor_history", job_ids)
        found.update(super()._resolve_gone([j for j in job_ids if j not in found]))
        return found

    def _ask(self, tool: str, job_ids: list) -> dict:
        cmd = f"{tool} {' '.join(shlex.quote(j) for j in job_ids)} {ATTRIBUTES}"
        rc, out, err = self._run(cmd)
        if rc != 0:
            raise self._query_failed(cmd, rc, out, err)
        return {j: s for j, s in parse_condor_q(out).items() if j in job_ids}

    def _cancel_command(self, job_ids: list) -> str:
        return "condor_rm " + " ".join(shlex.quote(j) for j in job_ids)


def parse_condor_q(stdout: str) -> dict:
    """``{job id: JobStatus}`` from ``condor_q`` or ``condor_history`` with ``-af:j JobStatus
    ExitCode RemoveReason HoldReason`` (a line per job: its id, then the attributes separated
    by spaces, ``undefined`` when unset)."""
    result = {}
    for line in stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 3 or not re.match(r"^\d+\.\d+$", parts[0]):
            continue
        job_id, code, exit_code = parts[0], parts[1], parts[2]
        reasons = parts[3] if len(parts) > 3 else ""
        state = STATES.get(code, JobState.UNKNOWN)
        exit_code = int(exit_code) if exit_code.lstrip("-").isdigit() else None
        if state is JobState.COMPLETED and exit_code:
            state = JobState.FAILED
        if state is JobState.CANCELLED and "PeriodicRemove" in reasons:
            state = JobState.TIMEOUT  # our walltime rule removed it
        message = f"condor JobStatus {code}"
        if reasons.replace("undefined", "").strip():
            message += f" ({reasons})"
        result[job_id] = JobStatus(state, message=message, exit_code=exit_code)
    return result
