"""A quick probe of the big-data path: one 200 MB numpy array passed to 8 tasks, and 8 tasks
returning 50 MB each, on celeriac's embedded default (needs numpy). Runs the celeriac of the
checkout it sits in: ``python benchmarks/bigdata_probe.py [MB in] [MB out] [tasks]``."""
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))

import numpy as np  # noqa: E402

import celeriac  # noqa: E402
from celeriac import python_app  # noqa: E402


@python_app
def checksum(a):
    return float(a[::4096].sum())


@python_app
def make(n, seed):
    import numpy as np
    return np.full(n, seed, dtype=np.uint8)


def main(mb_in=200, mb_out=50, tasks=8):
    with celeriac.load():
        assert checksum(np.ones(10)).result() == 1.0  # warm up
        big = np.arange(mb_in * 2 ** 20 // 8, dtype=np.float64)
        expect = float(big[::4096].sum())
        t0 = time.perf_counter()
        assert [f.result() for f in [checksum(big) for _ in range(tasks)]] == [expect] * tasks
        t_in = time.perf_counter() - t0
        t0 = time.perf_counter()
        outs = [f.result() for f in [make(mb_out * 2 ** 20, i) for i in range(tasks)]]
        t_out = time.perf_counter() - t0
        assert [int(o[-1]) for o in outs] == list(range(tasks))
    print(f"in: {tasks} x {mb_in} MB -> {t_in:.2f}s ({tasks * mb_in / t_in:.0f} MB/s); "
          f"out: {tasks} x {mb_out} MB -> {t_out:.2f}s ({tasks * mb_out / t_out:.0f} MB/s); "
          f"total {t_in + t_out:.2f}s")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
