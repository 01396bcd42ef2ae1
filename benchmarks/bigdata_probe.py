"""A quick probe of the big-data path: one 200 MB numpy array passed to 8 tasks, and 8 tasks
returning 50 MB each, with 2 workers (needs numpy where the system runs).

    python benchmarks/bigdata_probe.py [celeriac|parsl-htex] [MB in] [MB out] [tasks]

celeriac runs from the checkout this file sits in; parsl-htex needs benchmarks/.venv-parsl
(setup_peers.sh) with numpy, and runs itself there.
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def checksum(a):
    return float(a[::4096].sum())


def make(n, seed):
    import numpy as np
    return np.full(n, seed, dtype=np.uint8)


def main(system="celeriac", mb_in=200, mb_out=50, tasks=8):
    import numpy as np
    import systems
    adapter = systems.get(system)
    python_app, _ = adapter.decorators()
    remote_checksum, remote_make = python_app(checksum), python_app(make)
    with adapter.load():
        assert remote_checksum(np.ones(10)).result() == 1.0  # warm up
        big = np.arange(mb_in * 2 ** 20 // 8, dtype=np.float64)
        expect = checksum(big)
        t0 = time.perf_counter()
        futures = [remote_checksum(big) for _ in range(tasks)]
        assert [f.result() for f in futures] == [expect] * tasks
        t_in = time.perf_counter() - t0
        t0 = time.perf_counter()
        outs = [f.result() for f in [remote_make(mb_out * 2 ** 20, i) for i in range(tasks)]]
        t_out = time.perf_counter() - t0
        assert [int(o[-1]) for o in outs] == list(range(tasks))
    print(f"{adapter.version()}: in {tasks} x {mb_in} MB {t_in:.2f}s "
          f"({tasks * mb_in / t_in:.0f} MB/s); out {tasks} x {mb_out} MB {t_out:.2f}s "
          f"({tasks * mb_out / t_out:.0f} MB/s); total {t_in + t_out:.2f}s")


if __name__ == "__main__":
    args = sys.argv[1:]
    system = args[0] if args and not args[0].isdigit() else "celeriac"
    numbers = [int(a) for a in args if a.isdigit()]
    import systems  # noqa: E402  (benchmarks/ is on sys.path: this file's directory)
    python = systems.get(system).python
    if os.path.abspath(python) != os.path.abspath(sys.executable) and \
            not os.environ.get("BIGDATA_PROBE_CHILD"):
        sys.exit(subprocess.call([python, __file__, *args],
                                 env=dict(os.environ, BIGDATA_PROBE_CHILD="1", PATH=os.pathsep.join(
                                     [os.path.dirname(python), os.environ["PATH"]]))))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [ROOT, HERE, os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, ROOT)
    os.chdir(HERE)  # run directories under benchmarks/runinfo (gitignored)
    main(system, *numbers)
