"""Parsl's map-reduce pattern: many independent apps, then one that takes all their futures."""

import celeriac
from celeriac import python_app


@python_app
def app_double(x):
    return x * 2


@python_app
def app_sum(inputs=()):
    return sum(inputs)


if __name__ == "__main__":
    with celeriac.load():
        items = range(0, 4)
        # Map phase: apply double to each item
        mapped_results = [app_double(i) for i in items]
        # Reduce phase: sum the doubled values; the futures are its dependencies
        total = app_sum(inputs=mapped_results)
        print(total.result())
