"""Files and staging: File, the Staging plug-in point and its providers (Parsl's names too)."""

from celeriac.staging.base import Staging
from celeriac.staging.file_noop import NoOpFileStaging
from celeriac.staging.files import File
from celeriac.staging.ftp import FTPStaging
from celeriac.staging.http import HTTPStaging
from celeriac.staging.rsync import RSyncStaging
from celeriac.staging.zip import ZipFileStaging

# Parsl's names. celeriac's providers run each transfer as a task of its own on the app's
# executor, so Parsl's in-task variants are the same providers here (see the README).
HTTPSeparateTaskStaging = HTTPInTaskStaging = HTTPStaging
FTPSeparateTaskStaging = FTPInTaskStaging = FTPStaging

#: Parsl's default storage_access, for ``storage_access=default_staging + [...]``
default_staging = [NoOpFileStaging(), FTPStaging(), HTTPStaging(), ZipFileStaging()]

__all__ = ["File", "Staging", "NoOpFileStaging", "HTTPStaging", "FTPStaging", "RSyncStaging",
           "ZipFileStaging", "default_staging", "HTTPSeparateTaskStaging", "HTTPInTaskStaging",
           "FTPSeparateTaskStaging", "FTPInTaskStaging"]
