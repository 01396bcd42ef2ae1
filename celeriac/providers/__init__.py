"""Providers: where blocks of workers come from (this machine, or a batch system)."""

from celeriac.providers.base import ExecutionProvider, JobState, JobStatus
from celeriac.providers.cluster import ClusterProvider
from celeriac.providers.condor import CondorProvider
from celeriac.providers.gridengine import GridEngineProvider
from celeriac.providers.local import LocalProvider
from celeriac.providers.lsf import LSFProvider
from celeriac.providers.pbspro import PBSProProvider
from celeriac.providers.slurm import SlurmProvider
from celeriac.providers.torque import TorqueProvider

__all__ = ["ExecutionProvider", "JobState", "JobStatus", "ClusterProvider", "LocalProvider",
           "SlurmProvider", "GridEngineProvider", "PBSProProvider", "TorqueProvider",
           "LSFProvider", "CondorProvider"]
