"""The run file: what a worker needs to join a run (broker URL, signing key, run id).

Written by the orchestrator as ``<run_dir>/worker.json`` with mode 0600, because it holds
secrets that must never appear on a command line or in a log.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from celeriac.errors import ConfigurationError


@dataclass
class RunFile:
    broker_url: str
    key: str
    run_id: str

    def write(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh)

    @classmethod
    def read(cls, path: str) -> "RunFile":
        try:
            with open(path) as fh:
                return cls(**json.load(fh))
        except (OSError, ValueError, TypeError) as e:
            raise ConfigurationError(f"cannot read run file {path!r}: {e}") from None
