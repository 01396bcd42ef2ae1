"""HTTPStaging: downloads ``http://`` and ``https://`` Files on the worker, streamed to disk."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Optional

from celeriac.errors import StagingError
from celeriac.staging.base import Staging

__all__ = ["HTTPStaging", "HTTPInTaskStaging", "HTTPSeparateTaskStaging", "download"]

CHUNK = 1 << 20


class HTTPStaging(Staging):
    """Stage in ``http(s)://`` Files by downloading them where the app runs.

    Args:
        cafile: a PEM file of certificates to trust for https (a self-signed server's),
            besides the system's; None trusts the system's only.
        timeout: seconds to wait for the server to connect or send the next bytes.

    The body is streamed in 1 MiB chunks (memory stays flat whatever the size) to a
    temporary name next to the destination, checked against ``Content-Length`` and against
    a ``#sha256=<hex>`` fragment of the URL if there is one, then renamed into place: an
    interrupted download never leaves a partial file under the final name.
    """

    def __init__(self, cafile: Optional[str] = None, timeout: float = 60.0):
        self.cafile = cafile
        self.timeout = timeout

    def can_stage_in(self, file) -> bool:
        return file.scheme in ("http", "https")

    def transfer_in(self, file, working_dir) -> None:
        download(file.url, file.local_path, cafile=self.cafile, timeout=self.timeout)

    def __repr__(self):
        return f"HTTPStaging(cafile={self.cafile!r})"


#: Parsl's name: downloads in the app's task, where it runs (HTTPStaging's default)
HTTPInTaskStaging = HTTPStaging


class HTTPSeparateTaskStaging(HTTPStaging):
    """Parsl's separate-task variant: each download is a task of its own on the app's
    executor (``_celeriac_stage_in``), so the executor's ``working_dir`` must be shared."""

    transfers_run_on = "executor"

    def __repr__(self):
        return f"HTTPSeparateTaskStaging(cafile={self.cafile!r})"


def download(url: str, path: str, cafile: Optional[str] = None, timeout: float = 60.0) -> int:
    """Download ``url`` to ``path``; returns the number of bytes.

    Raises:
        StagingError: the server cannot be reached, answers with an error status, sends
            fewer or more bytes than it announced, a checksum does not match, or ``path``
            cannot be written (a full disk).
    """
    # Here, not at the top: http.client, email and ssl are not on the path to starting a run.
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    url, _, fragment = url.partition("#")
    expected_sha = fragment[len("sha256="):].lower() if fragment.startswith("sha256=") else None
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        if cafile:
            context.load_verify_locations(cafile=cafile)
    try:
        response = urllib.request.urlopen(url, timeout=timeout, context=context)
    except urllib.error.HTTPError as e:
        raise StagingError(url, f"the server answered {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise StagingError(url, f"cannot reach the server: {e.reason}") from None
    except OSError as e:
        raise StagingError(url, f"cannot reach the server: {e}") from None
    tmp = f"{path}.part-{uuid.uuid4().hex[:8]}"
    digest = hashlib.sha256()
    size = 0
    try:
        with response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise StagingError(url, f"the download broke off after {size} bytes: "
                                       f"{e}") from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:
                    raise StagingError(url, f"cannot write {path}: {e}") from None
                digest.update(chunk)
                size += len(chunk)
        if length is not None and int(length) != size:
            raise StagingError(url, f"size mismatch: the server announced {length} bytes "
                               f"(Content-Length) but sent {size}")
        if expected_sha and digest.hexdigest() != expected_sha:
            raise StagingError(url, f"checksum mismatch: sha256 {digest.hexdigest()}, the "
                               f"URL says {expected_sha}")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return size
