"""File staging against real servers on 127.0.0.1: one conformance suite that every staging
provider passes (file, http, https, ftp, zip, rsync over the real sshd), the failures a user
meets (404, refused login, unreachable host, short body, checksum), and a workflow on a real
Celery worker that downloads its inputs over http and rsyncs its outputs back."""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import cloudpickle
import pytest
from services import flower, get_json
from staging_servers import FTPFiles, HTTPFiles, self_signed_cert

import celeriac
from celeriac import Config, File, bash_app, python_app
from celeriac.errors import ConfigurationError, DependencyError, StagingError
from celeriac.executors import CeleryExecutor, ThreadPoolExecutor
from celeriac.staging import (
    FTPStaging,
    HTTPStaging,
    NoOpFileStaging,
    RSyncStaging,
    Staging,
    ZipFileStaging,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@python_app
def read(inputs=()):
    with open(inputs[0]) as f:
        return inputs[0].filepath, f.read()


@python_app
def write(text, outputs=()):
    with open(outputs[0], "w") as f:
        f.write(text)
    return outputs[0].filepath


@python_app
def after(value):
    return value


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    certdir = tmp_path_factory.mktemp("cert")
    cert, key = self_signed_cert(certdir)
    http_, https_, ftp_ = HTTPFiles(root), HTTPFiles(root, cert, key), FTPFiles(root)
    yield {"root": root, "http": http_, "https": https_, "ftp": ftp_, "cafile": cert}
    for server in (http_, https_, ftp_):
        server.close()


class Site:
    """Where one provider's files live: put a file there, name a destination, read one."""

    def __init__(self, provider, url_of, read_back, root: Path, stages_out=True):
        self.provider, self.url_of, self.root = provider, url_of, root
        self.read_back, self.stages_out = read_back, stages_out

    def put(self, name: str, data: str) -> File:
        (self.root / name).write_text(data)
        return File(self.url_of(name))


def _zip_site(tmp: Path) -> Site:
    archive = tmp / "bundle.zip"

    def url_of(name):
        return f"zip:{archive}/{name}"

    site = Site(ZipFileStaging(), url_of, lambda f: zipfile.ZipFile(archive).read(
        f.path.split(".zip/")[1]).decode(), tmp)

    def put(name, data):
        with zipfile.ZipFile(archive, "a") as z:
            z.writestr(name, data)
        return File(url_of(name))
    site.put = put
    return site


@pytest.fixture(params=["file", "http", "https", "ftp", "zip", "rsync"])
def site(request, servers, tmp_path):
    kind = request.param
    root = servers["root"]
    on_disk = lambda f: (root / f.filename).read_text()  # noqa: E731
    if kind == "file":
        return Site(NoOpFileStaging(), lambda n: str(root / n), on_disk, root)
    if kind in ("http", "https"):
        provider = HTTPStaging(cafile=servers["cafile"] if kind == "https" else None)
        return Site(provider, lambda n: f"{servers[kind].url}/{n}", on_disk, root,
                    stages_out=False)
    if kind == "ftp":
        return Site(FTPStaging(), lambda n: f"{servers['ftp'].url}/{n}", on_disk, root)
    if kind == "zip":
        return _zip_site(tmp_path)
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed: run tests/scripts/install_test_packages.sh")
    sshd = request.getfixturevalue("sshd")
    provider = RSyncStaging("root@127.0.0.1", port=sshd.port, key_filename=sshd.key,
                            known_hosts=sshd.known_hosts)
    return Site(provider, lambda n: str(root / n), on_disk, root)


@pytest.fixture
def load(tmp_path):
    loaded = []

    def make(storage_access, working_dir=None, executor=None, retries=0):
        executor = executor or ThreadPoolExecutor(
            label="threads", max_threads=2, storage_access=storage_access,
            working_dir=str(tmp_path / "worker") if working_dir is None else working_dir)
        celeriac.clear()
        dfk = celeriac.load(Config([executor], run_dir=str(tmp_path / "runinfo"),
                                   retries=retries))
        loaded.append(dfk)
        return dfk
    yield make
    for dfk in loaded:
        dfk.cleanup()
    celeriac.clear()


# ------------------------------------------------------------------ the conformance suite


def test_the_app_reads_the_staged_in_file(site, load, tmp_path):
    load([site.provider])
    f = site.put(f"in-{os.getpid()}.txt", "hello from the server\n")
    path, text = read(inputs=[f]).result()
    assert text == "hello from the server\n"
    if not isinstance(site.provider, NoOpFileStaging):  # copied where the app runs
        assert path.startswith(str(tmp_path / "worker")) or "staging" in path


def test_an_output_data_future_resolves_once_the_file_is_at_its_destination(
        site, load):
    if not site.stages_out:
        pytest.skip(f"{type(site.provider).__name__} stages in only (as in Parsl)")
    load([site.provider])
    target = File(site.url_of(f"out-{os.getpid()}.txt"))
    fut = write("made by the app\n", outputs=[target])
    staged = fut.outputs[0].result()
    assert staged.url == target.url
    assert site.read_back(target) == "made by the app\n"


def test_a_missing_file_fails_the_app_with_a_staging_error_and_dependents_get_dependency_error(
        site, load):
    load([site.provider])
    missing = File(site.url_of("no-such-file.txt"))
    if isinstance(site.provider, ZipFileStaging):
        site.put("something-else.txt", "x")   # the archive exists, the member does not
    fut = read(inputs=[missing])
    if isinstance(site.provider, NoOpFileStaging):
        with pytest.raises(FileNotFoundError):  # nothing to stage: the app's own error
            fut.result()
        return
    with pytest.raises(StagingError) as info:
        fut.result()
    assert "no-such-file.txt" in str(info.value)
    assert "pw-4d9a" not in str(info.value)     # the FTP password never shows
    with pytest.raises(DependencyError):
        after(fut).result()


def test_a_provider_travels_to_workers_and_takes_only_its_own_files(site):
    copy = pickle.loads(cloudpickle.dumps(site.provider))
    assert copy.can_stage_in(File(site.url_of("a.txt")))
    assert not copy.can_stage_in(File("s3://bucket/a.txt"))


def test_zip_staging_without_a_working_dir_uses_the_run_directory(load, tmp_path):
    archive = tmp_path / "no-wd.zip"
    executor = ThreadPoolExecutor(label="threads", storage_access=[ZipFileStaging()])
    dfk = load(None, executor=executor)
    out = write("zipped\n", outputs=[File(f"zip:{archive}/deep/out.txt")])
    out.outputs[0].result()
    assert zipfile.ZipFile(archive).read("deep/out.txt") == b"zipped\n"
    path, text = read(inputs=[File(f"zip:{archive}/deep/out.txt")]).result()
    assert text == "zipped\n" and path.startswith(os.path.join(dfk.run_dir, "staging"))


def test_parsls_documented_ftp_example_runs_with_only_its_imports_changed(servers, load,
                                                                          tmp_path):
    from celeriac.staging import default_staging
    (servers["root"] / "ARIN-STATS-FORMAT-CHANGE.txt").write_text("arin stats\n")
    load(None, executor=ThreadPoolExecutor(storage_access=default_staging,
                                           working_dir=str(tmp_path / "wd")))

    @python_app
    def convert(inputs=(), outputs=()):
        with open(inputs[0].filepath, 'r') as inp:
            content = inp.read()
            with open(outputs[0].filepath, 'w') as out:
                out.write(content.upper())

    inp = File(f"{servers['ftp'].url}/ARIN-STATS-FORMAT-CHANGE.txt")
    out = File(f"file://{tmp_path}/ARIN-STATS-FORMAT-CHANGE.txt")
    f = convert(inputs=[inp], outputs=[out])
    f.result()
    assert (tmp_path / "ARIN-STATS-FORMAT-CHANGE.txt").read_text() == "ARIN STATS\n"


# ------------------------------------------------------------------ failures


def test_http_404_names_the_url_and_the_status(servers, load):
    load([HTTPStaging()])
    url = f"{servers['http'].url}/absent.txt"
    with pytest.raises(StagingError, match=r"staging .*/absent.txt failed: the server "
                                           r"answered 404"):
        read(inputs=[File(url)]).result()


def test_an_output_staged_out_feeds_the_next_app_through_a_stage_in(servers, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"   # two sites sharing nothing
    celeriac.clear()
    with celeriac.load(Config([
            ThreadPoolExecutor(label="here", storage_access=[FTPStaging()], working_dir=here),
            ThreadPoolExecutor(label="there", storage_access=[FTPStaging()], working_dir=there)],
            run_dir=str(tmp_path / "runinfo"))):
        url = f"{servers['ftp'].url}/chain-{os.getpid()}.txt"
        first = python_app(executors=["here"])(write.func)("passed along\n",
                                                           outputs=[File(url)])
        second = python_app(executors=["there"])(read.func)(inputs=[first.outputs[0]])
        path, text = second.result()
    celeriac.clear()
    assert text == "passed along\n" and path == str(there / f"chain-{os.getpid()}.txt")


def test_a_stage_in_is_retried_like_any_task(servers, load):
    load([HTTPStaging()], retries=1)
    fut = read(inputs=[File(f"{servers['http'].url}/flaky/{os.getpid()}")])
    assert fut.result()[1] == "ok"    # the first try got 503, the retry the file


def test_an_unreachable_server_is_a_staging_error(load):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    load([HTTPStaging(timeout=5)])
    with pytest.raises(StagingError, match="cannot reach the server.*refused"):
        read(inputs=[File(f"http://127.0.0.1:{port}/x.txt")]).result()


def test_a_body_shorter_than_its_content_length_fails_and_leaves_no_file(servers, load,
                                                                          tmp_path):
    load([HTTPStaging()])
    with pytest.raises(StagingError, match="broke off|size mismatch"):
        read(inputs=[File(f"{servers['http'].url}/short/10")]).result()
    assert not any((tmp_path / "worker").iterdir())   # no partial file, under any name


def test_a_full_disk_is_a_staging_error_and_leaves_no_partial_file(servers, load, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as a full disk needs root")
    (servers["root"] / "big.bin").write_bytes(b"x" * 200_000)
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        load([HTTPStaging()], working_dir=str(disk))
        with pytest.raises(StagingError, match=r"cannot write .*No space left on device"):
            read(inputs=[File(f"{servers['http'].url}/big.bin")]).result()
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_sha256_fragment_is_checked(servers, load):
    (servers["root"] / "sum.txt").write_text("abc")
    load([HTTPStaging()])
    good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    ok = read(inputs=[File(f"{servers['http'].url}/sum.txt#sha256={good}")])
    assert ok.result()[1] == "abc"
    bad = read(inputs=[File(f"{servers['http'].url}/sum.txt#sha256={'0' * 64}")])
    with pytest.raises(StagingError, match="checksum mismatch"):
        bad.result()


def test_https_with_an_untrusted_certificate_is_refused(servers, load):
    (servers["root"] / "tls.txt").write_text("secret")
    load([HTTPStaging()])   # not told to trust the self-signed certificate
    with pytest.raises(StagingError, match="CERTIFICATE_VERIFY_FAILED"):
        read(inputs=[File(f"{servers['https'].url}/tls.txt")]).result()


def test_a_refused_ftp_login_names_the_user_and_never_the_password(servers, load):
    (servers["root"] / "f.txt").write_text("x")
    load([FTPStaging()])
    url = f"ftp://alice:wrong-password-77@127.0.0.1:{servers['ftp'].port}/f.txt"
    with pytest.raises(StagingError) as info:
        read(inputs=[File(url)]).result()
    message = str(info.value)
    assert "login as 'alice' refused: 530" in message
    assert "wrong-password-77" not in message and "alice:***@" in message


def test_a_file_no_provider_takes_is_refused_at_call_time_but_local_files_stay_usable(
        load, tmp_path):
    load([HTTPStaging()])
    with pytest.raises(ConfigurationError, match="cannot stage in 's3://b/k.txt'.*storage_acc"):
        read(inputs=[File("s3://b/k.txt")])
    with pytest.raises(ConfigurationError, match="cannot stage out 's3://b/out.txt'"):
        read(inputs=[File("http://127.0.0.1:1/in.txt")], outputs=[File("s3://b/out.txt")])
    assert celeriac.dfk().tasks == {}   # refused before any stage task was started
    (tmp_path / "local.txt").write_text("here")
    assert read(inputs=[File(str(tmp_path / "local.txt"))]).result()[1] == "here"


def test_a_parsl_style_provider_subclass_stages_through_its_own_app(load, tmp_path):
    calls = []

    class Echo(Staging):  # the shape of Parsl's separate-task providers
        def can_stage_in(self, file):
            return file.scheme == "echo"

        def stage_in(self, dm, executor, file, parent_fut):
            file.local_path = str(tmp_path / file.filename)
            calls.append(executor)
            app = python_app(executors=[executor], data_flow_kernel=dm.dfk)(_echo_stage_in)
            return app(outputs=[file], _parsl_staging_inhibit=True,
                       parent_fut=parent_fut)._outputs[0]

    load([Echo()])
    assert read(inputs=[File("echo://host/said.txt")]).result()[1] == "echo://host/said.txt"
    assert calls == ["threads"]


def _echo_stage_in(parent_fut=None, outputs=(), _parsl_staging_inhibit=True):
    with open(outputs[0].local_path, "w") as f:
        f.write(outputs[0].url)


@bash_app
def say(text, stdout=None):
    return f"echo {text}"


def test_a_stdout_file_is_staged_out_like_an_output(servers, load):
    dfk = load([FTPStaging()])
    target = f"{servers['ftp'].url}/said-{os.getpid()}.txt"
    fut = say("hello-ftp", stdout=File(target))
    assert fut.result() == 0
    dfk.wait_for_current_tasks()   # the stage-out is a task like any other
    assert (servers["root"] / f"said-{os.getpid()}.txt").read_text() == "hello-ftp\n"


# ------------------------------------------------------------------ end to end, on Celery


@bash_app
def count_lines(inputs=(), outputs=()):
    return f"cat {inputs[0]} {inputs[1]} | wc -l > {outputs[0]}"


def test_a_workflow_downloads_over_http_runs_on_a_celery_worker_and_rsyncs_outputs_back(
        servers, sshd, load, tmp_path):
    (servers["root"] / "a.txt").write_text("1\n2\n3\n")
    (servers["root"] / "b.txt").write_text("4\n5\n")
    results = tmp_path / "results"
    results.mkdir()
    scratch = tmp_path / "scratch"        # the worker's own directory, not the results'
    rsync = RSyncStaging("root@127.0.0.1", port=sshd.port, key_filename=sshd.key,
                         known_hosts=sshd.known_hosts)
    dfk = load(None, executor=CeleryExecutor(label="celery", workers_per_node=1,
                                             storage_access=[rsync, HTTPStaging()],
                                             working_dir=str(scratch)))
    with flower(os.path.join(dfk.run_dir, "worker.json")) as base:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:   # Flower sees only the tasks after it connects
            try:
                if get_json(f"{base}/api/workers?refresh=1"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        fut = count_lines(inputs=[File(f"{servers['http'].url}/a.txt"),
                                  File(f"{servers['http'].url}/b.txt")],
                          outputs=[File(str(results / "count.txt"))])
        done = fut.outputs[0].result(timeout=40)
        assert done.filepath == str(results / "count.txt")
        assert (results / "count.txt").read_text().strip() == "5"
        assert (scratch / "a.txt").exists()            # downloaded where the worker runs
        names = []
        while time.monotonic() < deadline and len(names) < 4:  # events arrive in their time
            names = sorted(str(t.get("name")) for t in get_json(f"{base}/api/tasks").values())
            time.sleep(0.5)
    assert names == ["_celeriac_stage_in", "_celeriac_stage_in", "_celeriac_stage_out",
                     "count_lines"]
    log = (Path(dfk.run_dir) / "celeriac.log").read_text()
    assert "_celeriac_stage_in: http://127.0.0.1" in log and "_celeriac_stage_out" in log


class CopyAfter(Staging):
    """Parsl's in-task shape for outputs: ``replace_task_stage_out`` wraps the app in code
    that copies its output to the URL's path once the app returns."""

    def can_stage_out(self, file):
        return file.scheme == "copy"

    def stage_out(self, dm, executor, file, app_fu):
        file.local_path = os.path.join(dm.dfk.executors[executor].working_dir, file.filename)
        return None

    def replace_task_stage_out(self, dm, executor, file, func):
        def wrapper(*args, **kwargs):
            result = func(*args, **kwargs)
            shutil.copy(file.local_path, file.path)
            return result
        return wrapper


@bash_app
def shout(text, outputs=()):
    return f"echo {text} > {outputs[0]}"


def test_a_parsl_style_stage_out_wrapper_runs_after_a_bash_apps_command(load, tmp_path):
    os.makedirs(tmp_path / "worker", exist_ok=True)
    load([CopyAfter()])
    fut = shout("wrapped", outputs=[File(f"copy://host{tmp_path}/kept.txt")])
    assert fut.result() == 0
    assert (tmp_path / "kept.txt").read_text() == "wrapped\n"
