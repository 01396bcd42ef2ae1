"""The pure parts of staging: URLs with passwords hidden, zip: URLs, storage options, where a
staged file lives on the worker, and the kernel failing an app with its stage-in's error."""

from concurrent.futures import Future

import pytest

from celeriac import File
from celeriac.errors import ConfigurationError, StagingError, hide_password
from celeriac.executors import CeleryExecutor, ThreadPoolExecutor
from celeriac.orchestrator import kernel as k
from celeriac.orchestrator.states import States, TaskRecord
from celeriac.staging import HTTPStaging, NoOpFileStaging, ZipFileStaging
from celeriac.staging.zip import zip_path_split


@pytest.mark.parametrize("url, shown", [
    ("ftp://alice:pa55word@host:21/a.txt", "ftp://alice:***@host:21/a.txt"),
    ("https://host/x?y=1", "https://host/x?y=1"),
    ("ftp://alice@host/a.txt", "ftp://alice@host/a.txt"),
    ("/plain/path", "/plain/path"),
])
def test_a_url_is_shown_with_its_password_hidden(url, shown):
    assert hide_password(url) == shown


def test_a_staging_error_never_repeats_the_password_even_when_the_cause_quotes_it():
    e = StagingError("ftp://u:hunter2pw@h/f", "530 for ftp://u:hunter2pw@h/f (hunter2pw)")
    assert str(e) == "staging ftp://u:***@h/f failed: 530 for ftp://u:***@h/f (***)"
    assert e.url == "ftp://u:***@h/f"


def test_a_zip_url_names_the_archive_and_the_member():
    f = File("zip:/tmp/foo/this.zip/inside/here.txt")
    assert f.scheme == "zip" and zip_path_split(f.path) == ("/tmp/foo/this.zip",
                                                            "inside/here.txt")
    assert ZipFileStaging().can_stage_out(f)
    assert ZipFileStaging().local_path("/w", f) == "/w/inside/here.txt"


@pytest.mark.parametrize("url, says", [("zip://host/a.zip/b", "no host part"),
                                       ("zip:/tmp/a.tar/b", "ending in .zip")])
def test_a_malformed_zip_url_is_refused_saying_how_to_write_one(url, says):
    with pytest.raises(ConfigurationError, match=says):
        ZipFileStaging().can_stage_in(File(url))


def test_a_staged_file_lives_in_the_working_dir_or_the_workers_current_directory():
    f = File("https://example.org/data/genome.fa")
    assert HTTPStaging().local_path("/scratch/me", f) == "/scratch/me/genome.fa"
    assert HTTPStaging().local_path(None, f) == "genome.fa"


def test_a_remote_file_outside_an_app_says_how_to_get_a_local_path():
    with pytest.raises(ValueError, match="pass the File to the app"):
        File("https://example.org/genome.fa").filepath


def test_executors_take_storage_access_and_working_dir():
    http = HTTPStaging()
    e = CeleryExecutor(label="c", provider=None, storage_access=[http], working_dir="/w")
    assert (e.storage_access, e.working_dir, e.ignored_options) == ([http], "/w", {})
    t = ThreadPoolExecutor(label="t", storage_access=(NoOpFileStaging(),))
    assert isinstance(t.storage_access, list) and t.working_dir is None


@pytest.mark.parametrize("bad", ["http", [object()], HTTPStaging()])
def test_storage_access_must_be_a_list_of_providers(bad):
    with pytest.raises(ConfigurationError, match="storage_access must be a list of staging"):
        ThreadPoolExecutor(label="t", storage_access=bad)


def test_an_app_whose_stage_in_failed_fails_with_the_staging_error_not_a_dependency_error():
    staged = Future()
    staged.set_exception(StagingError("http://h/a.txt", "the server answered 404 Not Found"))
    r = TaskRecord(id=3, func=len, func_name="app", kind="python", args=(staged,), kwargs={},
                   executor="x", stage_ins=(staged,))
    r.app_fu, r.depends = Future(), [staged]
    [fail] = k.Kernel().handle(k.Submitted(r))
    assert isinstance(fail, k.SetException) and isinstance(fail.exception, StagingError)
    assert r.status is States.failed
