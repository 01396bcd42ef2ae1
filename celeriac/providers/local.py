"""LocalProvider: blocks are process groups on this machine."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

from celeriac.orchestrator.processes import die_with_parent
from celeriac.providers.base import ExecutionProvider, JobState, JobStatus

logger = logging.getLogger(__name__)


class LocalProvider(ExecutionProvider):
    """Run each block as a local process group (its script under ``script_dir``).

    Blocks die with the orchestrator process (Linux parent-death signal), so a killed
    workflow leaves no workers behind.
    """

    label = "local"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._jobs: dict[str, subprocess.Popen] = {}
        self._cancelled: set[str] = set()

    def submit(self, command: str, tasks_per_node: int, job_name: str = "celeriac") -> str:
        script_dir = self.script_dir or os.getcwd()
        os.makedirs(script_dir, exist_ok=True)
        script = os.path.join(script_dir, f"{job_name}.sh")
        with open(script, "w") as fh:
            fh.write(f"#!/bin/bash\n{self.worker_init}\n{command}\n")
        out = open(os.path.join(script_dir, f"{job_name}.stdout"), "w")
        err = open(os.path.join(script_dir, f"{job_name}.stderr"), "w")
        with out, err:
            proc = subprocess.Popen(["/bin/bash", script], stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=die_with_parent)
        job_id = str(proc.pid)
        proc.stdout_path, proc.stderr_path = out.name, err.name
        self._jobs[job_id] = proc
        logger.info("local block %s started: %s", job_id, script)
        return job_id

    def status(self, job_ids: list) -> list:
        result = []
        for job_id in job_ids:
            proc = self._jobs.get(job_id)
            if proc is None:
                result.append(JobStatus(JobState.MISSING))
                continue
            code = proc.poll()
            if code is None:
                state = JobState.RUNNING
            elif job_id in self._cancelled:
                state = JobState.CANCELLED
            else:
                state = JobState.COMPLETED if code == 0 else JobState.FAILED
            result.append(JobStatus(state, exit_code=code, stdout_path=proc.stdout_path,
                                    stderr_path=proc.stderr_path))
        return result

    def cancel(self, job_ids: list, grace: float = 10.0) -> list:
        """SIGTERM each block's process group (workers finish their current task), then
        SIGKILL whatever is left after ``grace`` seconds."""
        procs = [(j, self._jobs.get(j)) for j in job_ids]
        for job_id, proc in procs:
            if proc is not None and proc.poll() is None:
                self._cancelled.add(job_id)
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _job_id, proc in procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)  # also any stragglers in the group
            proc.wait()
        return [proc is not None for _j, proc in procs]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
