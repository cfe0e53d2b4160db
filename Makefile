# Everything a newcomer needs: `make test` (the suite, as CI runs it), `make test-fast` (all but the slow tests) and
# `make dev`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The locked versions, with hashes (`make lock` writes them from pyproject.toml): runtime.txt is what the Docker image
# installs, dev.txt adds the `dev` extra (embedded servers, test, lint and type tools) for everything here.
LOCKS := requirements/runtime.txt requirements/dev.txt
# Linux, Python 3.11 (the image's); the hashes cover every published file of each pinned version.
COMPILE := $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 --python-platform linux

.PHONY: install dev test test-fast lint typecheck layers pytest bench lock lock-upgrade clean

# Exactly the locked packages (pip refuses any file whose hash differs, and any dependency the lock lacks), then the
# project itself, editable, without resolving anything.
$(STAMP): pyproject.toml $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --requirement requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --editable .
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The import rules between the folders (tests/layers.py).
layers: $(STAMP)
	$(BIN)/python -m tests.layers

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck layers pytest

# The same checks and every test except those marked slow (the resilience scenarios and other long runs).
test-fast: lint typecheck layers
	$(BIN)/pytest -m "not slow"

# The whole service with embedded PostgreSQL, Redis and broker, plus a demo stream. Ctrl-C stops it all.
dev: $(STAMP)
	$(BIN)/ras dev

# Benchmarks (issue 7): not tests, no timing is asserted anywhere. Prints a table, writes bench/results/latest.json.
bench: $(STAMP)
	$(BIN)/python -m bench.run

# Re-resolve the locks after pyproject.toml changed, keeping every pin it still allows; `make lock-upgrade` moves every
# package to the newest version pyproject.toml allows. The dev set is resolved first and the runtime set within it,
# so a package both have is the same version in both (tests run what the image runs).
lock: $(STAMP)
	UV_CUSTOM_COMPILE_COMMAND="make lock" $(COMPILE) $(UPGRADE) --extra dev --output-file requirements/dev.txt
	UV_CUSTOM_COMPILE_COMMAND="make lock" $(COMPILE) $(UPGRADE) --constraints requirements/dev.txt \
		--output-file requirements/runtime.txt

lock-upgrade:
	$(MAKE) lock UPGRADE=--upgrade

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
