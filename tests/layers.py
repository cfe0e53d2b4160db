"""The import rules of the layers, checked from the source: `python -m tests.layers` (exit 1 and one line per
broken rule), and by the test suite (tests/test_layers.py).

    db/, infra/        import nothing of ours (each only itself)
    consumer/          db, infra and itself; never app
    consumer/pure/     itself and infra only, and none of the I/O libraries (no database, Redis, broker or HTTP)
    app/               db, infra and itself; never consumer
    app/reads/         app's shared modules, never app/graphql/ or app/rest/
    app/graphql/, app/rest/   never each other
    app's shared modules (app/*.py but main)   none of app's rooms
    devstack/          anything below it (app, consumer, db, infra); only ras/, tests and bench import it
    ras/               the `ras` command: on top of everything; nothing of ours imports it
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "consumer", "db", "infra", "devstack", "ras")
IO_LIBRARIES = ("sqlalchemy", "asyncpg", "redis", "aiokafka", "starlette", "uvicorn", "httpx")
APP_ROOMS = ("app.reads", "app.graphql", "app.rest")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted (a module or a name in one)
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterator[Import]:
    module = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (Import(module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield from (Import(module, f"{node.module}.{alias.name}", node.lineno) for alias in node.names)


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def top(name: str) -> str:
    return name.split(".", 1)[0]


def broken(edge: Import) -> str | None:
    """The rule `edge` breaks, or None."""
    source, target = edge.module, edge.target
    ours = top(target) in PACKAGES
    if within(source, "db", "infra") and ours and top(target) != top(source):
        return f"{top(source)} imports nothing of ours"
    if within(target, "ras") and not within(source, "ras"):
        return "only the command line (ras/) is on top: nothing imports it"
    if within(target, "devstack") and not within(source, "devstack", "ras"):
        return "devstack is for `ras dev`, tests and bench only"
    if within(source, "consumer.pure"):
        if within(target, *IO_LIBRARIES):
            return "consumer/pure does no I/O"
        if ours and not within(target, "consumer.pure", "infra"):
            return "consumer/pure imports only itself and infra"
    if within(source, "consumer") and within(target, "app"):
        return "consumer and app never import each other"
    if within(source, "app") and within(target, "consumer"):
        return "consumer and app never import each other"
    if within(source, "app.reads") and within(target, "app.graphql", "app.rest"):
        return "app/reads builds on nothing above it (graphql, rest)"
    if within(source, "app.graphql") and within(target, "app.rest"):
        return "app/graphql and app/rest never import each other"
    if within(source, "app.rest") and within(target, "app.graphql"):
        return "app/graphql and app/rest never import each other"
    shared_app = within(source, "app") and not within(source, "app.main", *APP_ROOMS)
    if shared_app and within(target, *APP_ROOMS):
        return "app's shared modules import none of its rooms (reads, graphql, rest)"
    return None


def sources(root: Path = ROOT) -> Iterable[Path]:
    for package in PACKAGES:
        yield from sorted((root / package).rglob("*.py"))


def violations(edges: Iterable[Import]) -> list[str]:
    found = []
    for edge in edges:
        rule = broken(edge)
        if rule is not None:
            found.append(f"{edge.module}:{edge.line} imports {edge.target}: {rule}")
    return found


def main() -> int:
    found = violations(edge for path in sources() for edge in imports_of(path))
    for line in found:
        print(line)
    print(f"layers: {len(found)} broken rule(s)" if found else "layers: every import follows the rules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
