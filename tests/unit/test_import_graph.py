"""Imports run one way: orchestrator -> wire <- workers, read from the source with ast."""

import ast
from pathlib import Path

import pytest

import celeriac

ROOT = Path(celeriac.__file__).parent

#: The one crossing allowed: the threads executor runs a call in the user's process.
ALLOWED = {("celeriac.orchestrator.executors.threads", "celeriac.workers.execute")}


def imports_of(package: str) -> list[tuple[str, str]]:
    """``[(module, imported module), ...]`` for every import in ``package``, including the
    ones inside functions."""
    found = []
    for path in sorted((ROOT / package.split(".", 1)[1].replace(".", "/")).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(module, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    parts = module.split(".")[:len(module.split(".")) - node.level]
                    base = ".".join(parts + ([base] if base else []))
                found.append((module, base))
                found += [(module, f"{base}.{alias.name}") for alias in node.names]
    return found


def crossings(package: str, forbidden: tuple[str, ...]) -> list[tuple[str, str]]:
    return sorted({(m, target) for m, target in imports_of(package)
                   if target.startswith(forbidden) and (m, target) not in ALLOWED
                   and not any(m == a and target.startswith(b + ".") for a, b in ALLOWED)})


def test_the_walk_sees_every_package_and_function_level_imports():
    # The test is only as good as its walk: it must see imports inside functions too.
    workers = imports_of("celeriac.workers")
    assert ("celeriac.workers.main", "celeriac.workers.app") in workers  # inside run_worker
    assert ("celeriac.orchestrator.executors.threads", "celeriac.workers.execute") in \
        imports_of("celeriac.orchestrator")
    assert any(m.startswith("celeriac.wire.") for m, _ in imports_of("celeriac.wire"))


@pytest.mark.parametrize("package, forbidden", [
    ("celeriac.wire", ("celeriac.orchestrator", "celeriac.workers")),
    ("celeriac.workers", ("celeriac.orchestrator",)),
    ("celeriac.orchestrator", ("celeriac.workers",)),
])
def test_imports_run_orchestrator_to_wire_from_workers(package, forbidden):
    assert crossings(package, forbidden) == []


def test_the_threads_executor_takes_only_the_call_runner_from_workers():
    found = {target for m, target in imports_of("celeriac.orchestrator")
             if target.startswith("celeriac.workers")}
    assert found == {"celeriac.workers.execute", "celeriac.workers.execute.run_call"}
