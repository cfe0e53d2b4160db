"""The service's one configuration object, read from `RAS_*` environment variables.

Both the API and the consumer build a `Settings` at start-up; a missing or invalid variable stops the process with a
message naming it and the expected form (see `load_settings`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from infra.failures import ConfigurationError

ENV_PREFIX = "RAS_"

DATABASE_URL_FORM = "postgresql+asyncpg://user:pass@host:5432/dbname"
# Common DATABASE_URL spellings (Heroku, docker images, libpq tools) name no driver; this service uses asyncpg.
_DATABASE_SCHEME = "postgresql+asyncpg"
_DATABASE_ALIASES = ("postgresql", "postgres")
REDIS_URL_FORM = "redis://host:6379/0 (or rediss:// for TLS, unix:///path/to/redis.sock)"
_REDIS_SCHEMES = ("redis", "rediss", "unix")
KAFKA_BOOTSTRAP_FORM = "comma-separated host:port, e.g. kafka-1:9092,kafka-2:9092"
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]/]+):(\d{1,5})")
ENVIRONMENT_FORM = "development or production"
# What a missing required variable should look like, in the message that says it is missing.
_EXPECTED = {"database_url": DATABASE_URL_FORM, "environment": ENVIRONMENT_FORM}
Environment = Literal["development", "production"]
# Public (README, docs, the original service's contract): fine on a laptop, refused in production.
DEVELOPMENT_API_KEY = "dev-internal-api-key"
MIN_PRODUCTION_KEY_LENGTH = 32
# Connections the request pool may open beyond RAS_DATABASE_POOL_SIZE (SQLAlchemy's max_overflow): for reads outside
# the execution limit (persisted documents, a read that outlived its request) and for a limit above the pool size.
DATABASE_POOL_OVERFLOW = 10
PRODUCTION_KEY_FORM = f"a random secret of at least {MIN_PRODUCTION_KEY_LENGTH} characters, e.g. `openssl rand -hex 32`"


class Settings(BaseSettings):
    """Every setting of the service. Field descriptions feed the generated configuration reference."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: str = Field(
        description="URL of the PostgreSQL database, e.g. postgresql+asyncpg://user:pass@host:5432/ras. The common "
        "DATABASE_URL forms postgresql://… and postgres://… work too: they are read as postgresql+asyncpg://… "
        "(the service always uses the asyncpg driver; another driver or database is refused at start).",
    )
    database_read_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated URLs of streaming read replicas of RAS_DATABASE_URL (same forms). The API "
        "reads from them, and from the primary while a replica is down or behind a read-your-writes position; "
        "the consumer, which always writes the primary, records its commits' WAL positions for the cache when this "
        "is set, so set it on the consumers too (docs/replicas.md). Empty: everything reads the primary.",
    )
    # Before the key: in production the key is checked against this (`_production_key`).
    environment: Environment = Field(
        description="Stated, never assumed (a deployment that forgot it must not come up as development). "
        "development turns GraphiQL, introspection and field suggestions on by default; production turns them off "
        "and refuses the development API key and keys shorter than 32 characters.",
    )
    kafka_bootstrap_servers: str = Field(
        default="localhost:9092", description="Comma-separated Kafka bootstrap servers, each host:port."
    )
    kafka_group_id: str = Field(default="result_aggregator_group", description="Kafka consumer group id.")
    kafka_client_id: str = Field(default="result-aggregator-consumer", description="Kafka client id.")
    kafka_auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a partition with no stored position starts.",
    )
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, description="Consumer group session timeout.")
    kafka_max_batch_records: int = Field(
        default=5_000,
        ge=1,
        description="Most records applied in one database transaction.",
    )
    kafka_max_batch_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1_024,
        description="Most bytes of record values applied in one database transaction (beside "
        "RAS_KAFKA_MAX_BATCH_RECORDS: whichever is reached first, give or take a tenth of the records): the "
        "transaction's rows and statements grow with it, so it bounds most of the consumer's memory.",
    )
    kafka_max_batch_rows: int = Field(
        default=8_000,
        ge=1,
        description="Most rows one table gets from one database transaction (one event may make many: a "
        "registration makes one per essay); a fetch over it is applied in parts. Each table's rows are one "
        "statement, whose parameters are the transaction's largest allocations.",
    )
    kafka_prefetch_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=65_536,
        description="Most bytes the Kafka client fetches ahead of the transactions, shared among the assigned "
        "partitions (a larger record is still fetched whole, and a broker may round each partition's share up to "
        "a whole record batch).",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=25,
        ge=1,
        description="How long the broker may hold a fetch open waiting for new records (bounds idle freshness); also "
        "the longest a caught-up consumer waits for the fetch that follows records it had buffered.",
    )
    kafka_fetch_timeout_ms: int = Field(
        default=200, ge=1, description="How long one fetch waits for records before applying what it has."
    )
    max_message_bytes: int = Field(
        default=1_048_576,
        ge=1_024,
        description="Largest record value the consumer parses; a larger one is quarantined unread.",
    )
    redis_url: str = Field(
        default="redis://localhost:6379/0",
        description="Redis URL for the query cache and live updates: redis://, rediss:// (TLS) or unix://. With "
        "RAS_REDIS_CLUSTER, any one node of the cluster.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="Redis is a Redis Cluster (cluster mode enabled, e.g. a managed Redis in cluster mode): the cache "
        "keeps its keys in one hash slot and live updates use pub/sub forwarded across the cluster (docs/cache.md).",
    )
    internal_api_key: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_API_KEY),
        description="Shared secret callers send in X-Internal-API-Key. The default is public: production refuses "
        f"it, and any key shorter than {MIN_PRODUCTION_KEY_LENGTH} characters.",
    )
    allowed_service_ids: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("api-gateway-service", "admin-dashboard-service"),
        description="Comma-separated service ids accepted in X-Service-ID.",
    )
    host: str = Field(default="0.0.0.0", description="Address the HTTP API binds to.")
    port: int = Field(default=4003, ge=1, le=65535, description="Port the HTTP API binds to.")
    metrics_port: int = Field(
        default=9095,
        ge=0,
        le=65535,
        description="Port of the API's /metrics for Prometheus, without credentials, on RAS_HOST (0 disables it). "
        "On RAS_PORT, /metrics answers only a service with the internal API key. Keep this port off the ingress.",
    )
    graphiql_enabled: bool | None = Field(
        default=None, description="Serve GraphiQL on GET /graphql from a browser (default: on in development)."
    )
    introspection_enabled: bool | None = Field(
        default=None,
        description='Allow schema introspection queries, and the "Did you mean …?" suggestions in error messages '
        "that would spell out the schema as well (default: on in development).",
    )
    graphql_executor: Literal["fast", "stock"] = Field(
        default="fast",
        description="How GraphQL queries execute: `fast` is app/graphql/execution.py's fast path, which checks at "
        "start-up "
        "that the Strawberry and graphql-core internals it relies on are there and behave as it expects, and "
        "otherwise logs a warning and uses `stock` (Strawberry's own executor; same answers, slower on large ones).",
    )
    documents: Literal["apq", "trusted", "off"] = Field(
        default="apq",
        description="Persisted GraphQL documents (docs/graphql.md): `apq` runs any query and Apollo's automatic "
        "persisted queries (a client sends a document's SHA-256, the text only once; registrations kept in Redis and "
        "PostgreSQL); `trusted` runs only documents added with `ras documents add`, by id or by text, and refuses "
        "everything else (for production); `off` runs any query and refuses persisted-query requests.",
    )
    max_query_depth: int = Field(default=12, ge=1, description="Deepest selection nesting a query may use.")
    max_query_tokens: int = Field(default=2_000, ge=10, description="Most lexical tokens a query document may have.")
    max_query_aliases: int = Field(default=30, ge=1, description="Most field aliases a query document may use.")
    max_page_size: int = Field(default=100, ge=1, description="Largest `first` of a list of batches.")
    max_essays_page_size: int = Field(
        default=1_000, ge=1, description="Largest `first` of a batch's essays (a whole class fits one page)."
    )
    max_entity_representations: int = Field(
        default=1_000,
        ge=1,
        description="Most representations one federation `_entities` field may be given (a gateway fetching Batch "
        "or Essay entities by id); more are refused with LIMIT_EXCEEDED before anything is read.",
    )
    max_query_length: int = Field(default=20_000, ge=100, description="Most characters a query document may have.")
    max_query_nodes: int = Field(
        default=150_000,
        ge=1,
        description="Most list items (batches and essays) a query may ask for: each connection's `first` multiplied "
        "through its nesting, summed over aliases and fragments. The default fits a full page of batches with a full "
        "page of essays each (100,100) plus a second essay list; thirty aliased copies of it do not.",
    )
    max_request_bytes: int = Field(default=65_536, ge=1_024, description="Largest HTTP request body accepted.")
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long a client has to send a request's line and headers, from the connection opening (or, "
        "on a kept-alive connection, from the request's first byte); past it the connection is closed.",
    )
    http_body_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How long a client has to send a request's whole body once its headers are in; past it the "
        "request is answered 408 (LIMIT_EXCEEDED) and the connection closed.",
    )
    http_max_connections_per_ip: int = Field(
        default=256,
        ge=0,
        description="Most connections one client address may hold open at once; a further one is closed as soon as "
        "it is accepted. 0: no cap. Behind a proxy every connection comes from the proxy: set it above the "
        "connections the proxy opens to one instance.",
    )
    compression_enabled: bool = Field(
        default=True,
        description="Answer with gzip where the request's Accept-Encoding prefers it (GraphQL, REST, GraphiQL and its "
        "files; every such response then carries Vary: Accept-Encoding). Off: only identity bodies, as when a proxy "
        "in front compresses.",
    )
    compression_min_bytes: int = Field(
        default=1_024,
        ge=0,
        description="Smallest body compressed; smaller ones go as they are (compression would save less than the "
        "gzip framing and the work cost).",
    )
    compression_memo_bytes: int = Field(
        default=33_554_432,
        ge=0,
        description="Most bytes of compressed cached answers one API process keeps (least recently used dropped "
        "first), so a cache hit is compressed once per process, not per request. 0: compress every hit again.",
    )
    cache_enabled: bool = Field(default=True, description="Cache whole GraphQL and REST results in Redis.")
    cache_prefix: str = Field(
        default="ras",
        min_length=1,
        pattern=r"^[^{}]+$",
        description="Prefix of every Redis key, so several deployments can share one Redis; no braces (it becomes "
        "the keys' Redis Cluster hash tag).",
    )
    cache_ttl_seconds: int = Field(
        default=3_600, ge=1, description="Safety-net expiry of cached results; eviction by events is the mechanism."
    )
    cache_max_id_chars: int = Field(
        default=256,
        ge=1,
        description="Longest batch or user id a stored result may have read: each becomes part of a Redis key, so a "
        "result that read a longer one (a made-up id in a lookup, say) is answered but not stored.",
    )
    cache_max_tags: int = Field(
        default=1_000,
        ge=1,
        description="Most batches and user lists a stored result may have read (each indexes it in Redis); a result "
        "that read more is answered but not stored. A page of 100 batches reads 101.",
    )
    redis_timeout_seconds: float = Field(
        default=0.1,
        gt=0,
        description="How long Redis may stay silent during a call before the cache is skipped (fail-open). The API "
        "counts only the time its event loop sat waiting (a busy API is not a slow Redis), starts again at each chunk "
        "of the answer, and gives a call up after 100 times this in all without blaming Redis; the consumer uses it as "
        "its socket timeout.",
    )
    live_updates_enabled: bool = Field(
        default=True,
        description="Live updates over Redis pub/sub: the consumer publishes what each transaction changed, the API "
        "serves GraphQL subscriptions and read-your-writes waits (see docs/live.md).",
    )
    live_queue_size: int = Field(
        default=16,
        ge=1,
        description="Notifications one subscription may have waiting; a subscriber that falls further behind is "
        "dropped with a 'subscriber too slow' error instead of buffering without bound.",
    )
    consistency_max_wait_ms: int = Field(
        default=10_000,
        ge=0,
        description="Longest read-your-writes wait a request may ask for (@consistent, Projection.waitFor).",
    )
    consistency_max_waiters: int = Field(
        default=100,
        ge=1,
        description="Most read-your-writes waits pending at once in one API process; one more is refused with "
        "LIMIT_EXCEEDED at once. A wait holds no database connection, but each is a task and a share of the "
        "positions reads.",
    )
    startup_timeout_seconds: float = Field(
        default=120.0, gt=0, description="How long a process waits for its dependencies at start before giving up."
    )
    shutdown_grace_seconds: int = Field(
        default=20, ge=0, description="How long SIGTERM waits for in-flight requests (API) before closing."
    )
    consumer_metrics_port: int = Field(
        default=9096, ge=0, le=65535, description="Port of the consumer's /metrics endpoint (0 disables it)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Log level of every logger of the process (JSON lines on stderr; Alembic's own INFO chatter only "
        "at DEBUG). DEBUG also prints the traceback behind a command's one-line failure message, as --debug does.",
    )
    max_concurrent_executions: int = Field(
        default=10,
        ge=1,
        description="Most uncached requests one API process executes at once (each holds a database snapshot from its "
        "first read until its answer is built). Cache hits never wait for this. A further request waits for a slot "
        "for at most RAS_ADMISSION_WAIT_SECONDS, then is refused with HTTP 503, Retry-After and SERVICE_UNAVAILABLE. "
        "At most the database pool's connections (RAS_DATABASE_POOL_SIZE plus its overflow).",
    )
    admission_wait_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How long an uncached request waits for an execution slot (RAS_MAX_CONCURRENT_EXECUTIONS) "
        "before it is refused with 503.",
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        description="Connections the API keeps in its request pool; up to "
        f"{DATABASE_POOL_OVERFLOW} more are opened when every one is taken and closed when returned. Keep it at "
        "least RAS_MAX_CONCURRENT_EXECUTIONS, so every admitted execution finds a kept connection.",
    )

    @field_validator("allowed_service_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return _database_url(value)

    @field_validator("database_read_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("database_read_urls")
    @classmethod
    def _database_read_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_database_url(url) for url in value)

    @field_validator("database_pool_size")
    @classmethod
    def _pool_holds_the_executions(cls, value: int, info: ValidationInfo) -> int:
        executions = info.data.get("max_concurrent_executions")
        if isinstance(executions, int) and executions > value + DATABASE_POOL_OVERFLOW:
            capacity = value + DATABASE_POOL_OVERFLOW
            raise _invalid(
                f"{value} (+ {DATABASE_POOL_OVERFLOW} overflow) connections cannot serve RAS_MAX_CONCURRENT_EXECUTIONS "
                f"{executions}: admitted executions would wait for a connection",
                f"at least {executions - DATABASE_POOL_OVERFLOW}, or RAS_MAX_CONCURRENT_EXECUTIONS at most {capacity}",
            )
        return value

    @field_validator("internal_api_key")
    @classmethod
    def _production_key(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("environment") != "production":
            return value
        key = value.get_secret_value()
        if key == DEVELOPMENT_API_KEY:
            raise _invalid("the public development key is refused in production", PRODUCTION_KEY_FORM)
        if len(key) < MIN_PRODUCTION_KEY_LENGTH:
            raise _invalid(f"{len(key)} characters is too short for production", PRODUCTION_KEY_FORM)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError:
            raise _invalid("not a URL", REDIS_URL_FORM) from None
        if parts.scheme not in _REDIS_SCHEMES:
            raise _invalid(f"scheme {parts.scheme or '(none)'}:// is not Redis", REDIS_URL_FORM)
        if parts.scheme == "unix" and not parts.path:
            raise _invalid("unix:// without a socket path", REDIS_URL_FORM)
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            match = _HOST_PORT.fullmatch(server.strip())
            if match is None or not 0 < int(match.group(1)) < 65536:
                entry = repr(server.strip()) if server.strip() else "an empty entry"
                raise _invalid(f"{entry} is not host:port", KAFKA_BOOTSTRAP_FORM)
        return value

    @property
    def graphiql(self) -> bool:
        return self.environment == "development" if self.graphiql_enabled is None else self.graphiql_enabled

    @property
    def introspection(self) -> bool:
        return self.environment == "development" if self.introspection_enabled is None else self.introspection_enabled


def _database_url(value: str) -> str:
    """`value` as a PostgreSQL URL of the asyncpg driver (driverless spellings are read as such), or why not."""
    scheme, separator, rest = value.partition("://")
    if separator and scheme in _DATABASE_ALIASES:
        value = f"{_DATABASE_SCHEME}://{rest}"
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise _invalid("not a URL", DATABASE_URL_FORM) from None
    if url.get_backend_name() != "postgresql":
        raise _invalid(f"scheme {url.get_backend_name()}:// is not PostgreSQL", DATABASE_URL_FORM)
    if url.drivername != _DATABASE_SCHEME:
        raise _invalid(f"driver {url.get_driver_name()} is not supported, only asyncpg", DATABASE_URL_FORM)
    return value


def _invalid(problem: str, expected: str) -> PydanticCustomError:
    context = {"problem": problem, "expected": expected}
    return PydanticCustomError("ras_setting", "{problem}; expected {expected}", context)


def configuration_error(exc: ValidationError) -> ConfigurationError:
    """One line per bad variable, named as the operator sets it: `invalid configuration: RAS_PORT: …`."""
    lines = []
    for error in exc.errors():
        field = "_".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "missing":
            expected = _EXPECTED.get(field)
            message = "not set" + (f"; expected {expected}" if expected else "")
        lines.append(f"invalid configuration: {ENV_PREFIX}{field.upper()}: {message}")
    return ConfigurationError("\n".join(lines))


# Stands in for RAS_DATABASE_URL in a command that never connects to the database (`ras produce-demo`).
UNUSED_DATABASE_URL = "postgresql+asyncpg://unused.invalid/unused"


def load_settings(*, database: bool = True, environment: Environment | None = None) -> Settings:
    """Build the settings from the environment, or raise the `ConfigurationError` that names every bad variable.

    `database=False`: for a command that needs no database, RAS_DATABASE_URL is neither required nor read.
    `environment`: for a command that is one environment by nature (`ras dev`, the demo producer), RAS_ENVIRONMENT
    is neither required nor read.
    """
    fixed: dict[str, str] = {}
    if not database:
        fixed["database_url"] = UNUSED_DATABASE_URL
    if environment is not None:
        fixed["environment"] = environment
    try:
        return Settings(**fixed)  # type: ignore[arg-type]  # pydantic-settings reads the rest from the environment
    except ValidationError as exc:
        raise configuration_error(exc) from None
