"""ZipFileStaging: ``zip:/path/archive.zip/member`` Files, read from and written into a zip."""

from __future__ import annotations

import fcntl
import os
import shutil
import zipfile

from celeriac.errors import ConfigurationError, StagingError
from celeriac.staging.base import Staging

__all__ = ["ZipFileStaging", "zip_path_split"]


class ZipFileStaging(Staging):
    """Stage in a member of a zip archive, or stage out a file into one, as Parsl's.

    ``zip:/tmp/foo/this.zip/inside/here.txt`` names the member ``inside/here.txt`` of the
    archive ``/tmp/foo/this.zip``. The transfers run in the orchestrator (the archive is on
    its file system), so the member's copy lives under the executor's ``working_dir`` (or
    ``runinfo/NNN/staging``), which the app's worker must see. Writers of one archive take
    turns through a lock file next to it (``<archive>.lock``).
    """

    transfers_run_on = "orchestrator"

    def can_stage_in(self, file) -> bool:
        return _is_zip(file)

    def can_stage_out(self, file) -> bool:
        return _is_zip(file)

    def local_path(self, working_dir, file) -> str:
        return os.path.join(working_dir or ".", zip_path_split(file.path)[1])

    def transfer_in(self, file, working_dir) -> None:
        archive, member = zip_path_split(file.path)
        tmp = file.local_path + ".part"
        try:
            with _locked(archive), zipfile.ZipFile(archive) as z, z.open(member) as src, \
                    open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, file.local_path)
        except KeyError:
            raise StagingError(file.url, f"{archive} has no member {member!r}") from None
        except (OSError, zipfile.BadZipFile) as e:
            raise StagingError(file.url, f"cannot read {archive}: {e}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def transfer_out(self, file, working_dir) -> None:
        archive, member = zip_path_split(file.path)
        try:
            os.makedirs(os.path.dirname(archive) or ".", exist_ok=True)
            with _locked(archive), zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as z:
                z.write(file.local_path, arcname=member)
            os.remove(file.local_path)
        except (OSError, zipfile.BadZipFile) as e:
            raise StagingError(file.url, f"cannot write into {archive}: {e}") from None

    def __repr__(self):
        return "ZipFileStaging()"


def _is_zip(file) -> bool:
    if file.scheme != "zip":
        return False
    if file.netloc:
        raise ConfigurationError(
            f"{file.url}: a zip: URL has no host part; write zip:/path/archive.zip/member")
    if ".zip/" not in file.path:
        raise ConfigurationError(
            f"{file.url}: a zip: URL names an archive ending in .zip and a member inside it, "
            "as in zip:/path/archive.zip/member")
    return True


def zip_path_split(path: str) -> tuple:
    """``/a/b.zip/c/d.txt`` -> ``('/a/b.zip', 'c/d.txt')``."""
    index = path.find(".zip/")
    return path[:index + 4], path[index + 5:]


class _locked:
    """An exclusive lock on ``<archive>.lock`` (fcntl), for the archive's writers and readers."""

    def __init__(self, archive: str):
        self.path = archive + ".lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
