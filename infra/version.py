"""The service's one version string: the installed distribution's, as `pip` and the wheel know it.

`ras --version`, `/healthz` and the OpenAPI document's `info.version` all read it from here, so bumping
`[project] version` in pyproject.toml (and reinstalling) changes all three at once.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "result-aggregator-service"


def _installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed (`pip install -e .` fixes it)
        return "0+unknown"


VERSION = _installed_version()
