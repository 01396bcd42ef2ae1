"""Parsl's bash apps passing files: each app's outputs become the next one's inputs."""

import os
import tempfile

import celeriac
from celeriac import File, bash_app


@bash_app
def generate(outputs=()):
    return "echo $(( RANDOM % 100 )) &> {}".format(outputs[0])


@bash_app
def concat(inputs=(), outputs=(), stdout=celeriac.AUTO_LOGNAME, stderr=celeriac.AUTO_LOGNAME):
    return "cat {0} > {1}".format(" ".join(i.filepath for i in inputs), outputs[0])


@bash_app
def total(inputs=(), stdout=celeriac.AUTO_LOGNAME):
    return "awk '{{ s += $1 }} END {{ print s }}' {}".format(inputs[0])


if __name__ == "__main__":
    workdir = tempfile.mkdtemp()
    with celeriac.load():
        outs = [generate(outputs=[File(os.path.join(workdir, f"random-{i}.txt"))])
                for i in range(5)]
        cc = concat(inputs=[o.outputs[0] for o in outs],
                    outputs=[File(os.path.join(workdir, "all.txt"))])
        t = total(inputs=[cc.outputs[0]])
        t.result()
        with open(os.path.join(workdir, "all.txt")) as fh:
            numbers = [int(line) for line in fh]
        with open(t.stdout) as fh:
            print(f"{len(numbers)} numbers, sum {fh.read().strip()} (expected {sum(numbers)})")
