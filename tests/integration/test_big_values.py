"""Big arguments and results travel as private files in shared memory, checked and cleaned up,
with real workers on the embedded Redis (celeriac.wire.bigvalues)."""

import glob
import hashlib
import os
import stat
import time

import pytest
from services import start_worker, stop, wait_until

import celeriac
from celeriac import Config, python_app
from celeriac.errors import UntrustedPayload
from celeriac.executors import CeleryExecutor
from celeriac.wire.bigvalues import ROOT_ENV, spill_dir

pytestmark = pytest.mark.integration

MB = 1 << 20
BLOB = os.urandom(4 * MB) * 50          # 200 MB
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


@python_app(executors=["local"])
def sha_when(blob, gate):
    import hashlib
    import os
    while not os.path.exists(gate):
        time.sleep(0.05)
    return hashlib.sha256(blob).hexdigest()


@python_app(executors=["local"])
def make(mb, seed):
    return bytes([seed]) * (mb << 20)


@python_app
def make_anywhere(mb, seed):
    return bytes([seed]) * (mb << 20)


@python_app(executors=["local"])
def doubled_in_place(a):
    a *= 2  # its own copy: the file and other tasks' arrays are untouched
    return a


@python_app(executors=["byhand"])
def sha_elsewhere(blob):
    import hashlib
    return hashlib.sha256(blob).hexdigest(), bytes(reversed(blob[:2 * 1024 * 1024]))


@pytest.fixture(scope="module")
def dfk(run_dir):
    celeriac.clear()
    d = celeriac.load(Config([CeleryExecutor(label="local", workers_per_node=2),
                              CeleryExecutor(label="byhand", provider=None)], run_dir=run_dir))
    yield d
    d.cleanup()
    celeriac.clear()


def files(dfk, prefix):
    return glob.glob(os.path.join(spill_dir(dfk.run_id), prefix + "-*"))


def start_byhand_worker(dfk, env=None):
    return start_worker("--executor", "byhand", "--run-file",
                        os.path.join(dfk.run_dir, "worker.json"), env=env, capture=True)


@pytest.mark.timeout(180)
def test_a_200_mb_argument_is_written_once_for_four_tasks_and_deleted_after_them(dfk, tmp_path):
    gate = str(tmp_path / "gate")
    futures = [sha_when(BLOB, gate) for _ in range(4)]
    wait_until(lambda: files(dfk, "a"), what="the argument's file")
    written = files(dfk, "a")
    assert len(written) == 1  # one file for the four tasks
    assert stat.S_IMODE(os.stat(written[0]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(spill_dir(dfk.run_id)).st_mode) == 0o700
    assert os.path.getsize(written[0]) == len(BLOB)
    open(gate, "w").close()
    assert [f.result(timeout=120) for f in futures] == [BLOB_SHA] * 4
    assert files(dfk, "a") == []  # no task needs it any more


@pytest.mark.timeout(180)
def test_big_results_come_back_whole_and_leave_no_file(dfk):
    results = [f.result(timeout=120) for f in [make(50, seed) for seed in range(4)]]
    assert [(len(r), r[:1], r[-1:]) for r in results] == \
        [(50 * MB, bytes([seed]), bytes([seed])) for seed in range(4)]
    assert files(dfk, "r") == []


@pytest.mark.timeout(180)
def test_a_numpy_array_round_trips_and_each_task_changes_only_its_own_copy(dfk):
    np = pytest.importorskip("numpy")
    a = np.arange(4 * MB, dtype=np.float64)   # 32 MB
    results = [f.result(timeout=120) for f in [doubled_in_place(a) for _ in range(3)]]
    for r in results:
        assert r.dtype == a.dtype and r.shape == a.shape and r[-1] == 2 * a[-1]
        assert (r == 2 * a).all()
    assert a[-1] == 4 * MB - 1


@pytest.mark.timeout(180)
def test_a_tampered_file_is_refused_with_an_error_that_says_so(dfk):
    blob = os.urandom(2 * MB)
    future = sha_elsewhere(blob)  # no worker serves "byhand" yet: the file waits
    wait_until(lambda: files(dfk, "a"), what="the argument's file")
    (path,) = files(dfk, "a")
    with open(path, "r+b") as fh:
        fh.seek(MB)
        fh.write(b"\0" if blob[MB] else b"\1")
    worker = start_byhand_worker(dfk)
    try:
        with pytest.raises(UntrustedPayload, match="changed or replaced after it was written"):
            future.result(timeout=90)
    finally:
        stop(worker)
    assert files(dfk, "a") == []


@pytest.mark.timeout(60)
def test_a_cancelled_tasks_file_is_deleted(dfk):
    future = sha_elsewhere(os.urandom(2 * MB))  # no worker serves "byhand": it stays queued
    wait_until(lambda: files(dfk, "a"), what="the argument's file")
    assert future.cancel()
    assert files(dfk, "a") == []


@pytest.mark.timeout(180)
def test_a_worker_that_cannot_see_the_files_gets_the_value_through_the_broker(dfk, tmp_path):
    # A worker on another host has no /dev/shm/celeriac-<run>: here, one whose spill root differs.
    worker = start_byhand_worker(dfk, env={ROOT_ENV: str(tmp_path)})
    try:
        blobs = [os.urandom(3 * MB) for _ in range(2)]
        for blob in blobs:  # the first is refused there and resent; the second goes inline
            sha, head = sha_elsewhere(blob).result(timeout=120)
            assert sha == hashlib.sha256(blob).hexdigest()
            assert head == bytes(reversed(blob[:2 * MB]))
    finally:
        stop(worker)
    assert files(dfk, "a") == [] and files(dfk, "r") == []
    assert os.listdir(tmp_path) == []  # that worker wrote nothing where it could not be read


@pytest.mark.timeout(120)
def test_the_spill_directory_is_gone_after_the_run(tmp_path):
    celeriac.clear()
    d = celeriac.load(Config([CeleryExecutor(label="celery", workers_per_node=1)],
                             run_dir=str(tmp_path)))
    try:
        assert make_anywhere(2, 7).result(timeout=90) == bytes([7]) * 2 * MB
        assert os.path.isdir(spill_dir(d.run_id))
    finally:
        d.cleanup()
        celeriac.clear()
    assert not os.path.exists(spill_dir(d.run_id))
