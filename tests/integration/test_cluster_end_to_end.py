"""End to end on a real cluster: a two-node Slurm block submitted over the SSH channel, whose
workers SrunLauncher starts on both nodes, appear in Flower, run tasks, and are cancelled at
cleanup.

The cluster is the private two-node Slurm of ``services.slurm`` (node 2 is a slurmd in a
network namespace, with its own host name and address); the SSH channel logs in to the private
sshd on 127.0.0.1:2222. Workers on node 2 reach the broker through the namespace's link, so the
broker listens there too (``EmbeddedRedis(host=...)``), password-protected.
"""

import os
import stat
import subprocess
import sys
import time

import pytest
from services import SLURM_ENV, flower, get_json, processes_mentioning

import celeriac
from celeriac import Config, python_app
from celeriac.executors import CeleryExecutor
from celeriac.launchers import SrunLauncher
from celeriac.orchestrator.broker import EmbeddedRedis
from celeriac.providers import SlurmProvider

pytestmark = pytest.mark.integration

HERE = os.path.dirname(os.path.abspath(__file__))


@python_app(executors=["cluster"])
def where(seconds):
    import socket
    import time
    time.sleep(seconds)
    return socket.gethostname()


def poll(what, check, timeout):
    """Call ``check()`` until it returns something true; fail naming ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.5)


@pytest.mark.timeout(240)
def test_slurm_block_over_ssh_with_srun_runs_on_both_nodes_and_is_cancelled(
        slurm, sshd, tmp_path):
    node_link = f"10.250.{SLURM_ENV['SLURM_SECOND_IDX']}.1"  # the host, as node 2 sees it
    broker = EmbeddedRedis(str(tmp_path / "broker"), host=node_link).start()
    remote_dir = str(tmp_path / "remote")  # the login node's files (the same disk here)
    provider = SlurmProvider(
        partition="debug", exclusive=False, nodes_per_block=2, init_blocks=1, max_blocks=1,
        walltime="00:10:00", launcher=SrunLauncher(),
        # what a user's worker_init does: put the environment that has celeriac on the path
        worker_init=f"export PATH={os.path.dirname(sys.executable)}:$PATH PYTHONPATH={HERE}",
        channel=sshd.channel(envs={"SLURM_CONF": slurm.env["SLURM_CONF"]},
                             script_dir=remote_dir))
    dfk = celeriac.load(Config(
        [CeleryExecutor(label="cluster", max_workers_per_node=1, provider=provider,
                        worker_start_timeout=90)],
        broker=broker.url, run_dir=str(tmp_path / "runinfo")))
    try:
        run_file = os.path.join(remote_dir, dfk.run_id, "worker.json")  # this run's own dir
        assert stat.S_IMODE(os.stat(run_file).st_mode) == 0o600  # pushed over SFTP, 0600
        assert stat.S_IMODE(os.stat(os.path.dirname(run_file)).st_mode) == 0o700
        assert provider.channel.connections_opened == 1       # sbatch went through SSH

        with flower(dfk._context.run_file) as base:
            def workers_on_both_nodes():
                names = get_json(f"{base}/api/workers?refresh=1")
                hosts = {name.rsplit("@", 1)[1] for name in names if name.startswith("celeriac-")}
                return hosts if hosts == set(slurm.nodes) else None

            poll("a worker on each node appearing in Flower", workers_on_both_nodes, 120)

            hosts = [f.result(timeout=60) for f in [where(0.3) for _ in range(12)]]
            assert set(hosts) == set(slurm.nodes)

            def tasks_listed():
                done = [t for t in get_json(f"{base}/api/tasks").values()
                        if t.get("name") == "where" and t.get("state") == "SUCCESS"]
                return len(done) >= 1

            poll("the tasks appearing in Flower under their app's name", tasks_listed, 60)
        [job_id] = dfk.executors["cluster"].blocks.values()
    finally:
        dfk.cleanup()
        celeriac.clear()
        broker.stop()
    # Cleanup cancelled the block through the SSH channel; its workers are gone on both nodes.
    def slurm_state():
        out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
                             env={**os.environ, **slurm.env}, capture_output=True, text=True,
                             timeout=15).stdout.strip()
        return out if out == "CANCELLED" else None

    poll("the block's job ending as CANCELLED in squeue", slurm_state, 60)
    poll("the block's workers exiting", lambda: not processes_mentioning(run_file), 60)
    assert provider.channel._conn is None  # cleanup closed the SSH connection
