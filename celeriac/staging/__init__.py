"""Files and staging: File, the Staging plug-in point and its providers (Parsl's names too)."""

from celeriac.staging.base import Staging
from celeriac.staging.file_noop import NoOpFileStaging
from celeriac.staging.files import File
from celeriac.staging.ftp import FTPStaging
from celeriac.staging.http import HTTPStaging
from celeriac.staging.rsync import RSyncStaging
from celeriac.staging.zip import ZipFileStaging

# Parsl's names: celeriac's providers run each transfer as a task of its own
HTTPSeparateTaskStaging = HTTPStaging
FTPSeparateTaskStaging = FTPStaging

__all__ = ["File", "Staging", "NoOpFileStaging", "HTTPStaging", "FTPStaging", "RSyncStaging",
           "ZipFileStaging", "HTTPSeparateTaskStaging", "FTPSeparateTaskStaging"]
