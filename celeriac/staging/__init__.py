"""Files and staging: File, the Staging plug-in point and its providers (Parsl's names too)."""

from celeriac.staging.base import Staging
from celeriac.staging.file_noop import NoOpFileStaging
from celeriac.staging.files import File
from celeriac.staging.ftp import FTPInTaskStaging, FTPSeparateTaskStaging, FTPStaging
from celeriac.staging.http import HTTPInTaskStaging, HTTPSeparateTaskStaging, HTTPStaging
from celeriac.staging.rsync import RSyncStaging
from celeriac.staging.zip import ZipFileStaging

#: Parsl's default storage_access, for ``storage_access=default_staging + [...]``
default_staging = [NoOpFileStaging(), FTPStaging(), HTTPStaging(), ZipFileStaging()]

__all__ = ["File", "Staging", "NoOpFileStaging", "HTTPStaging", "FTPStaging", "RSyncStaging",
           "ZipFileStaging", "default_staging", "HTTPSeparateTaskStaging", "HTTPInTaskStaging",
           "FTPSeparateTaskStaging", "FTPInTaskStaging"]
