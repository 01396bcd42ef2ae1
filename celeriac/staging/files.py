"""File: a location-independent reference to a file, as in Parsl."""

from __future__ import annotations

import os
from urllib.parse import urlparse


class File:
    """A file an app reads or writes.

    Args:
        url: a plain path, or a ``file://``, ``http(s)://``, ``ftp://`` or ``zip:`` URL.

    ``filepath`` is where an app should open it: for local files the path itself, for
    staged files ``local_path``, the path on the worker that staging set.
    """

    def __init__(self, url):
        if isinstance(url, os.PathLike):
            url = os.fspath(url)
        if not isinstance(url, str):
            raise TypeError(f"File() takes a path or URL string, not {type(url).__name__}")
        self.url = url
        parsed = urlparse(url)
        self.scheme = parsed.scheme if parsed.scheme else "file"
        self.netloc = parsed.netloc
        self.path = parsed.path if parsed.scheme else url
        self.filename = os.path.basename(self.path)
        self.local_path = None

    @property
    def filepath(self) -> str:
        """The path an app uses to open the file."""
        if self.local_path is not None:
            return self.local_path
        if self.scheme == "file":
            return self.path
        raise ValueError(
            f"File {self.url!r} has no local path here: a {self.scheme}: file gets one when "
            "it is staged for an app; pass the File to the app (as an argument, in inputs= "
            "or outputs=) and use .filepath inside it")

    def cleancopy(self) -> "File":
        return File(self.url)

    def __fspath__(self):
        return self.filepath

    def __str__(self):
        return self.filepath

    def __repr__(self):
        return f"<File {self.url}>"

    def __eq__(self, other):
        return isinstance(other, File) and other.url == self.url

    def __hash__(self):
        return hash(self.url)
