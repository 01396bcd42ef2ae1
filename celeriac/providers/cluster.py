"""ClusterProvider: what every batch-system provider does the same way.

A subclass supplies a submit-script ``template`` (a :class:`string.Template`, so a test can read
what will be submitted) and four small scheduler-specific pieces: the submit command, how to
read the job id from its output, one status query for many ids, and the cancel command. This
class renders the script (the launcher wraps the command), writes it under ``script_dir``,
pushes it through the channel, runs every batch command through
``channel.execute_wait(cmd, timeout=cmd_timeout)``, caches job states (finished jobs are never
asked about again) and keeps the block's stdout/stderr paths in each :class:`JobStatus`.

Template fields: ``jobname``, ``nodes``, ``tasks_per_node``, ``walltime`` (HH:MM:SS),
``walltime_seconds``, ``walltime_minutes``, ``scheduler_options``, ``worker_init``,
``user_script`` (the launched command), ``submit_script_dir``, ``stdout_path``,
``stderr_path``, plus whatever :meth:`ClusterProvider._job_config` adds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import string
import threading
import time
from abc import abstractmethod
from typing import Optional

from celeriac.errors import ChannelError, ConfigurationError, ProviderError, ScaleOutFailed
from celeriac.private_files import private_dir, private_file
from celeriac.providers.base import ExecutionProvider, JobState, JobStatus, walltime_to_seconds

logger = logging.getLogger(__name__)


class ClusterProvider(ExecutionProvider):
    """Base of the batch-system providers (Slurm, Grid Engine, PBS Pro, Torque, LSF, Condor).

    Takes every :class:`ExecutionProvider` option; subclasses add their scheduler's own.
    """

    #: the submit script, as ``string.Template`` text
    template: str = ""

    def __init__(self, **options):
        super().__init__(**options)
        self._jobs: dict[str, JobStatus] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    # ---- what each scheduler supplies ------------------------------------------------------

    @abstractmethod
    def _submit_command(self, script_path: str) -> str:
        """The shell command that submits the script at ``script_path`` (on the channel's host)."""

    @abstractmethod
    def _parse_job_id(self, stdout: str) -> Optional[str]:
        """The job id in the submit command's stdout, or None."""

    @abstractmethod
    def _query(self, job_ids: list) -> dict:
        """Ask the scheduler about ``job_ids`` in one call; return ``{id: JobStatus}`` for the
        ids it still knows. Raises ProviderError when it refuses."""

    @abstractmethod
    def _cancel_command(self, job_ids: list) -> str:
        """The shell command that cancels ``job_ids``."""

    def _job_config(self, tasks_per_node: int) -> dict:
        """Extra template fields (and overrides), e.g. scheduler directives built from options."""
        return {}

    def _resolve_gone(self, job_ids: list) -> dict:
        """Final states of jobs the status query no longer lists. As in Parsl, a job that left
        the queue is taken as COMPLETED unless the scheduler can tell more (subclasses ask)."""
        return {j: JobStatus(JobState.COMPLETED, message="the job left the scheduler's queue; "
                             "its exit status is not known") for j in job_ids}

    # ---- the contract ----------------------------------------------------------------------

    def submit(self, command: str, tasks_per_node: int, job_name: str = "celeriac") -> str:
        """Render the submit script, push it through the channel and submit it.

        Returns:
            The scheduler's job id.

        Raises:
            ScaleOutFailed: the channel or the scheduler refused; quotes their output.
        """
        if not isinstance(tasks_per_node, int) or tasks_per_node < 1:
            raise ConfigurationError(f"tasks_per_node must be an integer >= 1, got "
                                     f"{tasks_per_node!r}")
        name = f"{job_name}.{time.time():.6f}"
        local_dir = os.path.abspath(self.script_dir or os.path.join(os.getcwd(),
                                                                    "submit_scripts"))
        private_dir(local_dir)
        remote_dir = self.channel.script_dir or local_dir
        seconds = walltime_to_seconds(self.walltime)
        config = {
            "jobname": name, "nodes": self.nodes_per_block, "tasks_per_node": tasks_per_node,
            "walltime": self.walltime, "walltime_seconds": seconds,
            "walltime_minutes": max(1, math.ceil(seconds / 60)),
            "scheduler_options": self.scheduler_options, "worker_init": self.worker_init,
            "user_script": self.launcher(command, tasks_per_node, self.nodes_per_block),
            "submit_script_dir": remote_dir,
            "stdout_path": f"{remote_dir}/{name}.stdout",
            "stderr_path": f"{remote_dir}/{name}.stderr",
        }
        config.update(self._job_config(tasks_per_node))
        try:
            self.channel.makedirs(remote_dir)
            remote_script = None
            for path in self._write_scripts(name, config, local_dir):
                remote_script = self.channel.push_file(path, remote_dir)
        except ChannelError as exc:
            raise ScaleOutFailed(self.label, f"could not put the submit script on "
                                 f"{self.channel.hostname}: {exc}") from exc
        cmd = self._submit_command(remote_script)
        rc, out, err = self._run(cmd, ScaleOutFailed)
        if rc != 0:
            raise ScaleOutFailed(self.label, f"`{cmd}` failed with exit code {rc}; check the "
                                 f"provider's options (queue/partition, account, "
                                 f"scheduler_options)", out, err)
        job_id = self._parse_job_id(out)
        if not job_id:
            raise ScaleOutFailed(self.label, f"could not read a job id in the output of `{cmd}`",
                                 out, err)
        with self._lock:
            self._jobs[job_id] = JobStatus(JobState.PENDING, stdout_path=config["stdout_path"],
                                           stderr_path=config["stderr_path"])
        logger.info("%s: submitted block %s as job %s", self.label, name, job_id)
        return job_id

    def status(self, job_ids: list) -> list:
        """One scheduler call for all the unfinished jobs among ``job_ids``.

        Returns:
            A JobStatus per id, in order; ``MISSING`` for ids this provider never submitted.

        Raises:
            ProviderError: the status command failed (quotes the scheduler).
        """
        with self._lock:
            active = [j for j in dict.fromkeys(job_ids)
                      if j in self._jobs and not self._jobs[j].terminal]
        if active:
            found = self._query(active)
            gone = [j for j in active if j not in found]
            if gone:
                found.update(self._resolve_gone(gone))
            with self._lock:
                for job_id, new in found.items():
                    if job_id in self._jobs:
                        self._jobs[job_id] = self._merge(job_id, new)
        with self._lock:
            return [dataclasses.replace(self._jobs[j]) if j in self._jobs
                    else JobStatus(JobState.MISSING,
                                   message=f"job {j} was not submitted by this provider")
                    for j in job_ids]

    def cancel(self, job_ids: list) -> list:
        """Cancel the unfinished jobs among ``job_ids``.

        Returns:
            A bool per id: True if a cancel was sent for it, False for unknown or already
            finished ids.

        Raises:
            ProviderError: the scheduler refused to cancel jobs that are still running.
        """
        with self._lock:
            # FAILED too: a job in an error state (SGE Eqw, Slurm SPECIAL_EXIT) stays queued
            live = [j for j in dict.fromkeys(job_ids) if j in self._jobs
                    and (not self._jobs[j].terminal or self._jobs[j].state is JobState.FAILED)
                    and j not in self._cancelled]
        if live:
            cmd = self._cancel_command(live)
            rc, out, err = self._run(cmd, ProviderError)
            if rc != 0:
                # some may have ended meanwhile (the scheduler then says "no such job")
                still = [j for j, s in zip(live, self.status(live)) if not s.terminal]
                if still:
                    raise ProviderError(self.label, f"`{cmd}` failed with exit code {rc} "
                                        f"and jobs {still} are still there", out, err)
                live = []
            with self._lock:
                self._cancelled.update(live)
        return [j in live for j in job_ids]

    # ---- shared plumbing -------------------------------------------------------------------

    def _write_scripts(self, name: str, config: dict, local_dir: str) -> list:
        """Write the files a submission needs; the last one is what gets submitted."""
        try:
            text = string.Template(self.template).substitute(config)
        except (KeyError, ValueError) as exc:
            raise ConfigurationError(f"{self.label} submit template: bad field {exc}") from exc
        path = private_file(os.path.join(local_dir, f"{name}.submit"))
        with open(path, "w") as fh:
            fh.write(text)
        return [path]

    def _run(self, cmd: str, error=ProviderError) -> tuple:
        """Run a batch command through the channel; channel failures become ``error``."""
        logger.debug("%s: %s", self.label, cmd)
        try:
            return self.channel.execute_wait(cmd, timeout=self.cmd_timeout)
        except ChannelError as exc:
            raise error(self.label, f"could not run `{cmd}` on {self.channel.hostname}: "
                        f"{exc}") from exc

    def _query_failed(self, cmd: str, rc: int, out: str, err: str) -> ProviderError:
        return ProviderError(self.label, f"`{cmd}` failed with exit code {rc}", out, err)

    def _merge(self, job_id: str, new: JobStatus) -> JobStatus:
        """Keep the block's output paths; a job we cancelled that ended is CANCELLED."""
        old = self._jobs[job_id]
        state = new.state
        if job_id in self._cancelled and state in (JobState.COMPLETED, JobState.FAILED,
                                                   JobState.MISSING):
            state = JobState.CANCELLED
        return JobStatus(state, message=new.message, exit_code=new.exit_code,
                         stdout_path=old.stdout_path, stderr_path=old.stderr_path)
