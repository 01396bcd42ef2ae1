"""A large download streams to disk: the staging process's memory stays flat, whatever the
file's size (Parsl users stage inputs of many GB)."""

import os
import subprocess
import sys

import pytest
from staging_servers import HTTPFiles

SIZE = 400 * 2**20

# VmHWM is this process's own peak (ru_maxrss would start from the pytest process's size)
PROBE = """
import sys
from celeriac.staging.http import download
size = download(sys.argv[1], sys.argv[2])
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(size, int(hwm.split()[1]) // 1024)
"""


@pytest.mark.timeout(120)
def test_a_400_mb_download_streams_with_flat_memory(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    with open(served / "big.bin", "wb") as fh:  # sparse: no disk, still 400 MB of bytes
        fh.truncate(SIZE)
    server = HTTPFiles(served)
    try:
        out = subprocess.run([sys.executable, "-c", PROBE, f"{server.url}/big.bin",
                              str(tmp_path / "got.bin")], capture_output=True, text=True,
                             timeout=100)
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    size, peak_mb = map(int, out.stdout.split())
    assert size == SIZE == os.path.getsize(tmp_path / "got.bin")
    # the interpreter with celeriac imported is ~40 MB; holding the file would add 400 MB
    assert peak_mb < 120, f"peak RSS {peak_mb} MB for a {SIZE >> 20} MB download"
