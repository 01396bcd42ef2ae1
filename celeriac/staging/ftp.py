"""FTPStaging: ``ftp://[user:password@]host[:port]/path`` Files, fetched and stored by the
worker."""

from __future__ import annotations

import ftplib
import os
import uuid
from urllib.parse import unquote, urlparse

from celeriac.errors import StagingError
from celeriac.staging.base import Staging

__all__ = ["FTPStaging", "FTPInTaskStaging", "FTPSeparateTaskStaging"]

BLOCK = 1 << 16


class FTPStaging(Staging):
    """Stage ``ftp://`` Files in (RETR) and out (STOR) where the app runs.

    Args:
        timeout: seconds to wait for the server.

    Without a user in the URL the login is anonymous. Downloads go to a temporary name, are
    checked against the server's ``SIZE`` and renamed into place; uploads are stored under
    a temporary name and renamed on the server, so readers never see half a file.
    """

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout

    def can_stage_in(self, file) -> bool:
        return file.scheme == "ftp"

    def can_stage_out(self, file) -> bool:
        return file.scheme == "ftp"

    def transfer_in(self, file, working_dir) -> None:
        path = file.local_path
        tmp = f"{path}.part-{uuid.uuid4().hex[:8]}"
        with _connect(file.url, self.timeout) as ftp:
            try:
                expected = _size(ftp, file.path)
                with open(tmp, "wb") as out:
                    ftp.retrbinary(f"RETR {file.path}", out.write, BLOCK)
                got = os.path.getsize(tmp)
                if expected is not None and got != expected:
                    raise StagingError(file.url, f"size mismatch: the server says {expected} "
                                       f"bytes (SIZE) but sent {got}")
                os.replace(tmp, path)
            except ftplib.Error as e:
                raise StagingError(file.url, f"the server refused: {e}") from None
            except OSError as e:
                raise StagingError(file.url, f"transfer to {path} failed: {e}") from None
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def transfer_out(self, file, working_dir) -> None:
        directory, name = os.path.split(file.path)
        tmp = f"{directory}/.{name}.part-{uuid.uuid4().hex[:8]}"
        with _connect(file.url, self.timeout) as ftp:
            try:
                with open(file.local_path, "rb") as src:
                    ftp.storbinary(f"STOR {tmp}", src, BLOCK)
                ftp.rename(tmp, file.path)
            except ftplib.Error as e:
                raise StagingError(file.url, f"the server refused: {e}") from None
            except OSError as e:
                raise StagingError(file.url, f"upload failed: {e}") from None

    def __repr__(self):
        return "FTPStaging()"


#: Parsl's name: transfers in the app's task, where it runs (FTPStaging's default)
FTPInTaskStaging = FTPStaging


class FTPSeparateTaskStaging(FTPStaging):
    """Parsl's separate-task variant: each transfer is a task of its own on the app's
    executor, so the executor's ``working_dir`` must be shared."""

    transfers_run_on = "executor"

    def __repr__(self):
        return "FTPSeparateTaskStaging()"


def _connect(url: str, timeout: float) -> ftplib.FTP:
    parsed = urlparse(url)
    user = unquote(parsed.username) if parsed.username else "anonymous"
    password = unquote(parsed.password) if parsed.password else ""
    ftp = ftplib.FTP(timeout=timeout)
    try:
        ftp.connect(parsed.hostname, parsed.port or 21)
    except OSError as e:
        raise StagingError(url, f"cannot reach {parsed.hostname}:{parsed.port or 21}: "
                           f"{e}") from None
    try:
        ftp.login(user, password)
    except ftplib.Error as e:
        ftp.close()
        raise StagingError(url, f"login as {user!r} refused: {e}") from None
    return ftp


def _size(ftp: ftplib.FTP, path: str):
    try:
        ftp.voidcmd("TYPE I")
        return ftp.size(path)
    except ftplib.error_perm as e:
        if str(e).startswith("550"):  # no such file: let RETR say so in its own words
            raise
        return None  # SIZE not supported
