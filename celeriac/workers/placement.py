"""Where a node's workers run: how many the node's cores, memory and accelerators allow
(as Parsl's HTEX computes it), and the accelerator and cores each is pinned to."""

from __future__ import annotations

import os
import socket

from celeriac.errors import ConfigurationError
from celeriac.wire.options import CPU_AFFINITIES


class Placement:
    """How many worker processes this node runs, and what each is pinned to.

    Computed on the node, as Parsl's HTEX does: ``min(max_workers_per_node,
    cores / cores_per_worker, memory / mem_per_worker, len(accelerators))``.

    Args:
        max_workers: at most this many (None: no limit but the node's resources).
        cores_per_worker: cores each worker needs (may be fractional).
        mem_per_worker: GB of memory each worker needs (None: memory does not limit).
        accelerators: accelerator ids; worker ``i`` sees only ``accelerators[i]``.
        cpu_affinity: 'none', 'block', 'alternating' or 'block-reverse' (HTEX's meanings).
        cores: the cores this process may use (default: its affinity mask).
        mem_gb: the node's available memory in GB (default: MemAvailable).

    Raises:
        ConfigurationError: no worker fits on the node, or the affinity cannot be honoured;
            the message says which resource is short.
    """

    def __init__(self, max_workers=None, cores_per_worker: float = 1.0, mem_per_worker=None,
                 accelerators=(), cpu_affinity: str = "none", cores=None, mem_gb=None):
        if cpu_affinity not in CPU_AFFINITIES:
            raise ConfigurationError(
                f"cpu_affinity {cpu_affinity!r} is not one of {list(CPU_AFFINITIES)}")
        cores = sorted(os.sched_getaffinity(0)) if cores is None else sorted(cores)
        limits = {"cores": int(len(cores) // cores_per_worker)}
        if max_workers is not None:
            limits["max_workers_per_node"] = int(max_workers)
        if mem_per_worker:
            mem_gb = available_memory_gb() if mem_gb is None else mem_gb
            limits["memory"] = int(mem_gb // mem_per_worker)
        self.accelerators = [str(a) for a in accelerators]
        if self.accelerators:
            limits["accelerators"] = len(self.accelerators)
        self.count = min(limits.values())
        if self.count < 1:
            short = min(limits, key=limits.get)
            raise ConfigurationError(
                f"no worker fits on this node ({socket.gethostname()}): limited by {short} "
                f"({len(cores)} cores at {cores_per_worker} per worker, "
                f"{'%.1f GB' % mem_gb if mem_per_worker else 'memory unlimited'}"
                f"{f' at {mem_per_worker} GB per worker' if mem_per_worker else ''}, "
                f"max_workers_per_node={max_workers}, accelerators={self.accelerators}); "
                "lower cores_per_worker/mem_per_worker or ask the provider for bigger nodes")
        self.cpus = None
        if cpu_affinity != "none":
            self.cpus = [worker_cpus(cpu_affinity, cores, self.count, i)
                         for i in range(self.count)]


def worker_cpus(policy: str, cores: list, pool: int, i: int) -> list:
    """The cores worker ``i`` of ``pool`` is pinned to under ``policy`` (HTEX's policies)."""
    per = len(cores) // pool
    if per < 1:
        raise ConfigurationError(
            f"cpu_affinity={policy!r} needs a core per worker, but {pool} workers share "
            f"{len(cores)} cores; lower max_workers_per_node or use cpu_affinity='none'")
    if policy == "block":
        return cores[per * i:per * (i + 1)]
    if policy == "block-reverse":
        j = pool - i - 1
        return cores[per * j:per * (j + 1)]
    return cores[i::pool]  # alternating


def pin(accelerator: str | None, cpus: str | None) -> None:
    """In a worker process: see only its accelerator, and run on its cores."""
    if accelerator is not None:
        for var in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK"):
            os.environ[var] = accelerator
    if cpus:
        mine = [int(c) for c in cpus.split(",")]
        os.environ["OMP_NUM_THREADS"] = str(len(mine))
        os.environ["GOMP_CPU_AFFINITY"] = cpus
        os.environ["KMP_AFFINITY"] = f"explicit,proclist=[{cpus}]"
        os.sched_setaffinity(0, mine)


def available_memory_gb() -> float:
    """The node's available memory in GB (MemAvailable; total memory if that is unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
