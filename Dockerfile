# syntax=docker/dockerfile:1
#
# The Result Aggregator Service image. One image runs every role; the command picks it:
#   docker run IMAGE            -> `ras serve`   (GraphQL/REST API on RAS_PORT, default 4003; /metrics for
#                                                 Prometheus on RAS_METRICS_PORT, default 9095)
#   docker run IMAGE consume    -> `ras consume` (Kafka consumer, /metrics on RAS_CONSUMER_METRICS_PORT, default 9096)
#   docker run IMAGE migrate    -> `ras migrate` (Alembic upgrade to head, then exit)
# Configuration is RAS_* environment variables only; see docs/configuration.md. The image sets none: every role
# needs RAS_DATABASE_URL and RAS_ENVIRONMENT (production refuses the development RAS_INTERNAL_API_KEY and any key
# shorter than 32 characters).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------------------------
# builder: resolves and installs everything into a self-contained virtualenv, so the runtime stage needs no pip,
# no build backend and no source tree.
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, exactly the runtime lock (`make lock` writes it from pyproject.toml): every version pinned and
# every file's hash checked, and none of the development extras (embedded servers, test tools). This layer is rebuilt
# only when the lock changes, not on every source edit. Every dependency ships manylinux wheels, so no compiler.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --require-hashes --requirement requirements/runtime.txt

# The project's metadata and exactly the packages setuptools is told to include ([tool.setuptools.packages.find]);
# tests and docs stay out.
COPY pyproject.toml ./
COPY app ./app
COPY consumer ./consumer
COPY db ./db
COPY infra ./infra
COPY devstack ./devstack
COPY ras ./ras
# A regular (non-editable) install: the venv must not point back into /src, which the runtime stage does not have.
# --no-deps: the dependencies are the lock's, installed above; nothing is resolved here.
RUN pip install --no-deps . \
    && ras --help > /dev/null

# ---------------------------------------------------------------------------------------------------------------------
# runtime: the same slim base plus the finished virtualenv, running as an unprivileged user.
FROM ${PYTHON_IMAGE} AS runtime

# PYTHONUNBUFFERED: logs must reach `docker logs` as they happen, not when a buffer fills.
# PYTHONDONTWRITEBYTECODE: the venv is root-owned and read-only for the service user; don't try to write .pyc into it.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed numeric id (not a name) so orchestrators can verify runAsNonRoot and volume permissions are predictable.
RUN groupadd --system --gid 10001 ras \
    && useradd --system --uid 10001 --gid ras --create-home --home-dir /home/ras --shell /usr/sbin/nologin ras

COPY --from=builder /opt/venv /opt/venv

WORKDIR /home/ras
USER 10001:10001

EXPOSE 4003 9095 9096

# slim has no curl; the standard library is enough. urlopen raises on connection errors and non-2xx answers, which
# makes the exit status non-zero. The consumer and the migration job override or disable this in docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RAS_PORT', '4003') + '/healthz', timeout=3)"]

ENTRYPOINT ["ras"]
CMD ["serve"]
