"""Update the vendored GraphiQL, React and ReactDOM builds in app/static/vendor/ from the npm registry.

    .venv/bin/python -m scripts.update_graphiql                 # newest graphiql@4, react@18, react-dom@18
    .venv/bin/python -m scripts.update_graphiql --write         # … and rewrite the pins in app/graphiql.py
    .venv/bin/python -m scripts.update_graphiql --graphiql 4.1.2 --react 18.3.1

Downloads each package with `npm pack` (npm checks every tarball against the registry's integrity digest), takes
its single-file UMD build (plus GraphiQL's CSS) and its LICENSE, checks that they are what the page can load, copies
them into app/static/vendor/ and prints the new pins (name → SHA-256) for app/graphiql.py; `--write` replaces the
pin block there instead. Then run the GraphiQL tests (tests/app/graphql/test_graphiql.py, which drives headless
Chromium) and commit the vendor files together with app/graphiql.py.

The checks: GraphiQL's file is a UMD build that defines the `GraphiQL` global from the `React` and `ReactDOM` ones
(GraphiQL 5 ships ES modules only, so the 4.x line is the newest usable here); React and ReactDOM have the same
version, ship UMD builds (React 19 has none, so 18.x) and are in GraphiQL's peer range.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR_DIR = ROOT / "app" / "static" / "vendor"
PINS_FILE = ROOT / "app" / "graphiql.py"
BEGIN = "# BEGIN vendor pins"
END = "# END vendor pins"


@dataclass(frozen=True)
class Take:
    """A file of an npm package's tarball, copied into app/static/vendor/ as `name`."""

    member: str
    name: str
    served: bool = True  # served to the browser, so pinned; licences are only kept


TAKES = {
    "graphiql": (
        Take("package/graphiql.min.js", "graphiql.min.js"),
        Take("package/graphiql.min.css", "graphiql.min.css"),
        Take("package/LICENSE", "LICENSE.graphiql", served=False),
    ),
    "react": (
        Take("package/umd/react.production.min.js", "react.production.min.js"),
        Take("package/LICENSE", "LICENSE.react", served=False),
    ),
    "react-dom": (
        Take("package/umd/react-dom.production.min.js", "react-dom.production.min.js"),
        Take("package/LICENSE", "LICENSE.react-dom", served=False),
    ),
}
# The global each UMD build must define, and the ones it must read.
UMD_GLOBALS = {
    "graphiql.min.js": (".GraphiQL=", ("e.React", "e.ReactDOM")),
    "react.production.min.js": (".React=", ()),
    "react-dom.production.min.js": (".ReactDOM=", ()),
}


class UpdateError(RuntimeError):
    pass


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str
    manifest: dict[str, object]
    files: dict[str, bytes]  # vendored name → content


def sha256(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def npm_pack(spec: str, into: Path) -> tuple[Path, str]:
    """Download `spec` (name@range) with npm; returns the tarball and npm's integrity string for it."""
    npm = shutil.which("npm")
    if npm is None:
        raise UpdateError("npm is not installed (apt-get install npm)")
    done = subprocess.run(
        [npm, "pack", spec, "--json", "--pack-destination", str(into)],
        capture_output=True,
        text=True,
        check=False,
        cwd=into,
    )
    if done.returncode != 0:
        raise UpdateError(f"npm pack {spec} failed: {done.stderr.strip()[-500:]}")
    (report,) = json.loads(done.stdout)
    return into / str(report["filename"]), str(report["integrity"])


def read_package(name: str, tarball: Path, integrity: str) -> Package:
    """The files to vendor from one tarball, read by member name (nothing is extracted to disk)."""
    with tarfile.open(tarball, "r:gz") as archive:

        def member(path: str) -> bytes:
            try:
                handle = archive.extractfile(path)
            except KeyError:
                handle = None
            if handle is None:
                raise UpdateError(f"{tarball.name} has no {path}: this release does not ship the build we vendor")
            return handle.read()

        manifest = json.loads(member("package/package.json"))
        files = {take.name: member(take.member) for take in TAKES[name]}
    return Package(name, str(manifest["version"]), integrity, manifest, files)


def _majors(npm_range: str) -> set[int]:
    return {int(major) for major in re.findall(r"(?:^|[\s|^~>=])(\d+)(?=[.\s|]|$)", npm_range)}


def check(packages: dict[str, Package]) -> None:
    """Refuse a set the page cannot load: see the module's doc."""
    for package in packages.values():
        for name, body in package.files.items():
            if name not in UMD_GLOBALS:
                continue
            defines, reads = UMD_GLOBALS[name]
            head = body[:2000].decode("utf-8", "replace")
            if "typeof exports" not in head or defines not in head or not all(r in head for r in reads):
                raise UpdateError(
                    f"{package.name}@{package.version}: {name} is not a UMD build defining {defines.strip('.=')}"
                )
    react, react_dom, graphiql = packages["react"], packages["react-dom"], packages["graphiql"]
    if react.version != react_dom.version:
        raise UpdateError(f"react {react.version} and react-dom {react_dom.version} differ")
    peers = graphiql.manifest.get("peerDependencies")
    wanted = str(peers.get("react", "")) if isinstance(peers, dict) else ""
    if int(react.version.split(".")[0]) not in _majors(wanted):
        raise UpdateError(f"graphiql@{graphiql.version} wants react {wanted!r}, not {react.version}")


def pins_block(packages: dict[str, Package]) -> str:
    versions = ", ".join(f'"{p.name}": "{p.version}"' for p in packages.values())
    lines = [
        f"{BEGIN} (scripts/update_graphiql.py --write rewrites this block)",
        f"VENDOR_VERSIONS = {{{versions}}}",
        "VENDOR_SHA256 = {",
    ]
    for package in packages.values():
        for take in TAKES[package.name]:
            if take.served:
                lines.append(f'    "{take.name}": "{sha256(package.files[take.name])}",')
    lines += ["}", END]
    return "\n".join(lines)


def write_pins(block: str, path: Path = PINS_FILE) -> None:
    text = path.read_text(encoding="utf-8")
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise UpdateError(f"{path}: no {BEGIN!r} … {END!r} block to replace")
    path.write_text(text[:start] + block + text[stop + len(END) :], encoding="utf-8")


def copy_files(packages: dict[str, Package], into: Path = VENDOR_DIR) -> list[str]:
    """Write every vendored file; drop files of an earlier set that this one no longer has."""
    into.mkdir(parents=True, exist_ok=True)
    names = {name for package in packages.values() for name in package.files}
    for stale in into.iterdir():
        if stale.is_file() and stale.name not in names:
            stale.unlink()
    for package in packages.values():
        for name, body in package.files.items():
            (into / name).write_bytes(body)
    return sorted(names)


def fetch(specs: dict[str, str]) -> dict[str, Package]:
    with tempfile.TemporaryDirectory() as scratch:
        packages = {}
        for name, wanted in specs.items():
            tarball, integrity = npm_pack(f"{name}@{wanted}", Path(scratch))
            packages[name] = read_package(name, tarball, integrity)
    return packages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphiql", default="4", help="npm version or range of graphiql (default: 4)")
    parser.add_argument("--react", default="18", help="npm version or range of react and react-dom (default: 18)")
    parser.add_argument("--write", action="store_true", help="rewrite the pin block in app/graphiql.py")
    args = parser.parse_args(argv)
    try:
        packages = fetch({"graphiql": args.graphiql, "react": args.react, "react-dom": args.react})
        check(packages)
        names = copy_files(packages)
        block = pins_block(packages)
        if args.write:
            write_pins(block)
    except UpdateError as exc:
        print(f"update_graphiql: {exc}", file=sys.stderr)
        return 1
    for package in packages.values():
        print(f"{package.name}@{package.version}  {package.integrity}")
    print(f"copied to {VENDOR_DIR.relative_to(ROOT)}/: {', '.join(names)}")
    print(f"pins {'written to ' + str(PINS_FILE.relative_to(ROOT)) if args.write else 'for app/graphiql.py'}:")
    print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
