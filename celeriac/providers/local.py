"""LocalProvider: blocks are process groups on this machine."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

from celeriac.private_files import private_dir, private_file
from celeriac.processes import popen_tied_to_this_process
from celeriac.providers.base import ExecutionProvider, JobState, JobStatus

logger = logging.getLogger(__name__)


class LocalProvider(ExecutionProvider):
    """Run each block as a local process group (its script under ``script_dir``).

    The block script is ``worker_init`` followed by the launcher's text (default
    :class:`~celeriac.providers.launchers.SingleNodeLauncher`: ``tasks_per_node`` copies of
    the command, waited for). Blocks die with the orchestrator process (Linux parent-death
    signal), so a killed workflow leaves no workers behind. Takes the
    :class:`~celeriac.providers.base.ExecutionProvider` options; ``channel`` is accepted as
    in Parsl, but blocks always run on this machine.
    """

    label = "local"

    def __init__(self, **options):
        super().__init__(**options)
        self._jobs: dict[str, subprocess.Popen] = {}
        self._cancelled: set[str] = set()

    def submit(self, command: str, tasks_per_node: int, job_name: str = "celeriac") -> str:
        """Start the block's script in its own process group; its pid is the job id."""
        script_dir = self.script_dir or os.getcwd()
        private_dir(script_dir)
        script = private_file(os.path.join(script_dir, f"{job_name}.sh"))
        with open(script, "w") as fh:
            launched = self.launcher(command, tasks_per_node, self.nodes_per_block)
            # The parent-death signal reaches only this shell, while the workers run under the
            # launcher's subshells: pass a TERM on to the whole block (its process group).
            fh.write(f"#!/bin/bash\ntrap 'trap - TERM; kill -TERM 0' TERM\n"
                     f"{self.worker_init}\n{launched}\n")
        out = open(private_file(os.path.join(script_dir, f"{job_name}.stdout")), "w")
        err = open(private_file(os.path.join(script_dir, f"{job_name}.stderr")), "w")
        with out, err:
            proc = popen_tied_to_this_process(["/bin/bash", script], stdout=out, stderr=err,
                                              stdin=subprocess.DEVNULL, start_new_session=True)
        job_id = str(proc.pid)
        proc.stdout_path, proc.stderr_path = out.name, err.name
        self._jobs[job_id] = proc
        logger.info("local block %s started: %s", job_id, script)
        return job_id

    def status(self, job_ids: list) -> list:
        """RUNNING while the block's script runs; then COMPLETED, FAILED or CANCELLED."""
        result = []
        for job_id in job_ids:
            proc = self._jobs.get(job_id)
            if proc is None:
                result.append(JobStatus(JobState.MISSING, message=f"job {job_id} was not "
                                        f"submitted by this provider"))
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
        SIGKILL whatever is left after ``grace`` seconds. Returns a bool per id: True if it
        was running (False for unknown or finished ids)."""
        procs = [(j, self._jobs.get(j)) for j in job_ids]
        running = set()
        for job_id, proc in procs:
            if proc is not None and proc.poll() is None:
                self._cancelled.add(job_id)
                running.add(job_id)
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for job_id, proc in procs:
            if job_id not in running:
                continue
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)  # also any stragglers in the group
            proc.wait()
        return [j in running for j, _proc in procs]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
