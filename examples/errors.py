"""Parsl's error handling: a failed app raises at result(); its dependents fail without running.

The exception is the app's own, raised again here; its ``__cause__`` is the traceback from the
worker, naming this file, the line that failed and its source.
"""

import sys
import traceback

import celeriac
from celeriac import bash_app, python_app
from celeriac.errors import BashExitFailure, DependencyError


@python_app
def divide(a, b):
    return a / b


@python_app
def plus_one(x):
    return x + 1


@bash_app
def fails():
    return "exit 3"


if __name__ == "__main__":
    with celeriac.load():
        try:
            divide(1, 0).result()
        except ZeroDivisionError as e:
            print("caught:", repr(e))
            traceback.print_exception(e, file=sys.stderr)

        try:
            plus_one(divide(1, 0)).result()
        except DependencyError as e:
            print("dependency failed:", type(e.__cause__).__name__)

        try:
            fails().result()
        except BashExitFailure as e:
            print("bash exit code:", e.exitcode)
