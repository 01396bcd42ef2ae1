"""The quick start: apps, futures and dataflow on the embedded broker with local workers.

Run it with `python examples/quickstart.py`: no broker or worker to set up.
"""

import celeriac
from celeriac import AUTO_LOGNAME, bash_app, python_app


@python_app
def double(x):
    return 2 * x


@python_app
def total(inputs=()):
    return sum(inputs)


@bash_app
def greet(name, stdout=AUTO_LOGNAME):
    return f"echo Hello, {name}"


if __name__ == "__main__":
    with celeriac.load():  # no config: an embedded Redis and one Celery worker per core
        print("double(double(3)) =", double(double(3)).result())   # a future as an argument
        squares = [double(i) for i in range(10)]                 # ten tasks at once
        print("sum of doubles 0..9 =", total(inputs=squares).result())
        hello = greet("celeriac")
        hello.result()                                           # 0: the command succeeded
        with open(hello.stdout) as fh:
            print("bash app said:", fh.read().strip())
