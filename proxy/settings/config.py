"""config.yaml as pydantic models, and `load_config(path)`.

Owns: the shape of the file, `${ENV_VAR}` interpolation, and turning every problem into one
`ConfigError` naming the file, the dotted field path and the reason. Knows nothing of
policies' contents (see policy.py) and starts nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from proxy.core.errors import ConfigError
from proxy.settings.auth import AuthConfig, check_bind
from proxy.settings.base import Frozen
from proxy.settings.redis_url import RedisTarget, parse_redis_url


class Timeouts(Frozen):
    connect_s: float = Field(10.0, gt=0)
    first_token_s: float = Field(90.0, gt=0, description="cold starts last up to 90 s")
    total_s: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Timeouts:
        if self.first_token_s > self.total_s:
            raise ValueError("timeouts.first_token_s must not exceed timeouts.total_s")
        return self


class Price(Frozen):
    """USD per 1M tokens (proxy.settings.pricing). The names of `prober.prices`' first release,
    `prompt_per_1m_usd` / `completion_per_1m_usd`, are still read."""

    prompt_per_million: float = Field(
        ge=0, validation_alias=AliasChoices("prompt_per_million", "prompt_per_1m_usd")
    )
    completion_per_million: float = Field(
        ge=0, validation_alias=AliasChoices("completion_per_million", "completion_per_1m_usd")
    )


# Fields no provider may take from a client: set by routing (model), or the proxy's own.
_NOT_EXTRA = frozenset(("model", "provider"))
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def _extra_fields(names: list[str]) -> list[str]:
    for name in names:
        if name in _NOT_EXTRA or not _FIELD_NAME.match(name):
            raise ValueError(
                f"extra_fields: {name!r} cannot be a provider's extra field (a field name of "
                "letters, digits, _ . -; not model or provider)"
            )
    return names


EXTRA_FIELDS_DESCRIPTION = (
    "request fields beyond OpenAI's parameters that clients may send to this provider, "
    "e.g. [top_k, min_p, repetition_penalty, chat_template_kwargs] for vLLM or SGLang "
    "(docs/api.md); others are refused with a 400"
)


class OpenAIProvider(Frozen):
    """Any OpenAI-compatible endpoint, spoken to over the shared aiohttp pool."""

    kind: Literal["openai"] = "openai"
    base_url: AnyHttpUrl
    api_key: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    stream_for_non_stream: bool = Field(
        True, description="serve stream=false clients from an upstream stream (yields a TTFT)"
    )
    responses: bool = Field(
        False,
        description="the provider serves the Responses API (POST /responses); off: "
        "/v1/responses requests skip it (most OpenAI-compatible providers serve only chat)",
    )
    price: Price | None = Field(None, description="for every model of this provider (pricing)")
    extra_fields: list[str] = Field(default_factory=list, description=EXTRA_FIELDS_DESCRIPTION)

    _extra_names = field_validator("extra_fields")(_extra_fields)

    @property
    def url(self) -> str:
        return str(self.base_url).rstrip("/")


class LiteLLMProvider(Frozen):
    """Any provider litellm speaks to (Anthropic, Bedrock, Vertex...); imported lazily."""

    kind: Literal["litellm"]
    litellm_provider: str = Field(
        min_length=1, description="litellm's provider prefix, e.g. 'anthropic', 'bedrock'"
    )
    api_key: SecretStr | None = None
    api_base: AnyHttpUrl | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    params: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments for litellm (e.g. region)"
    )
    extra_fields: list[str] = Field(
        default_factory=list,
        description=EXTRA_FIELDS_DESCRIPTION + "; sent as litellm's extra_body",
    )
    forward_unknown_fields: bool = Field(
        False,
        description="no longer used (read so old configs load; a warning says so): list "
        "the fields in extra_fields",
    )
    price: Price | None = Field(None, description="instead of litellm's price map (pricing)")

    _extra_names = field_validator("extra_fields")(_extra_fields)


Provider = Annotated[OpenAIProvider | LiteLLMProvider, Field(discriminator="kind")]


class ModelEntry(Frozen):
    providers: dict[str, str] = Field(
        min_length=1, description="provider name -> that provider's own model id"
    )


class ServerConfig(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    replica_id: str | None = Field(None, description="defaults to hostname-pid")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    workers: int = Field(1, ge=1, le=64)
    # Connection limits (proxy/server.py): none of them needs a key to apply.
    timeout_keep_alive_s: float = Field(
        5.0, gt=0, description="an idle connection (before or between requests) is closed"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="from a request's first byte to the end of its headers (408)"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="from the end of the headers to the end of the body (408)"
    )
    body_read_timeout_s: float = Field(
        10.0, gt=0, description="between two reads of a request body (408): it must move"
    )
    max_connections: int = Field(
        1000, gt=0, description="open client connections per process; past it: 503, closed"
    )
    shutdown_drain_s: float = Field(
        25.0, ge=0, description="SIGTERM: streams in flight get this long to finish"
    )
    admin_listen: str | None = Field(
        None, description="HOST:PORT of a separate listener for /admin and /metrics"
    )
    public_metrics: bool = Field(
        False, description="/metrics without the admin key on the main listener (it shows "
        "traffic and costs of every pair)",
    )  # fmt: skip
    cost_header: bool = Field(
        False, description="send x-ttft-router-cost-usd on stream=false answers (usage x "
        "configured price: it tells clients the prices)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _admin_listen(self) -> ServerConfig:
        if self.admin_listen is not None:
            parse_listen(self.admin_listen)
            if self.workers > 1:
                raise ValueError("server.admin_listen needs server.workers: 1 (one process "
                                 "binds it); run replicas instead of workers")  # fmt: skip
        return self


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets) -> (host, port); ValueError naming the value."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"server.admin_listen: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


class MemoryStoreConfig(Frozen):
    kind: Literal["memory"] = "memory"
    max_samples: int = Field(1000, gt=0, description="samples kept per pair (newest)")
    max_age_s: float = Field(86400.0, gt=0)
    max_decisions: int = Field(1000, gt=0)


class RedisTlsConfig(Frozen):
    """TLS options of a `rediss` URL (every connection, Sentinels included). Paths as given:
    relative ones are relative to the working directory."""

    ca_file: Path | None = Field(None, description="CA bundle (PEM); default: the system's")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="the client certificate's key")
    check_hostname: bool = Field(True, description="the server certificate names the host")

    @model_validator(mode="after")
    def _pair(self) -> RedisTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("store.tls.cert_file and store.tls.key_file go together")
        return self


class RedisStoreConfig(Frozen):
    kind: Literal["redis"]
    url: SecretStr = Field(
        description="redis[s]://, redis[s]+cluster://h:p,h:p or redis[s]+sentinel://h:p,h:p/"
        "service (docs/redis.md)"
    )
    prefix: str = Field("ttft", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    max_samples: int = Field(1000, gt=0)
    max_age_s: float = Field(86400.0, gt=0)
    max_decisions: int = Field(1000, gt=0, description="decisions kept in the global log")
    max_decisions_per_model: int = Field(100, gt=0, description="decisions kept per model")
    socket_timeout_s: float = Field(0.5, gt=0)
    connect_timeout_s: float = Field(0.5, gt=0)
    pool_size: int = Field(16, gt=0, description="connections (per node on a Cluster)")
    sweep_s: float = Field(
        30.0, gt=0, description="compare every pair's version this often (beside the index)"
    )
    tls: RedisTlsConfig | None = Field(None, description="with a rediss URL only")
    sentinel_username: str | None = Field(None, description="the Sentinels' own ACL user")
    sentinel_password: SecretStr | None = Field(None, description="the Sentinels' own password")

    @field_validator("url")
    @classmethod
    def _url_parses(cls, url: SecretStr) -> SecretStr:
        parse_redis_url(url.get_secret_value())  # a ValueError says what is wrong
        return url

    @model_validator(mode="after")
    def _url_fits(self) -> RedisStoreConfig:
        target = self.target
        if self.tls is not None and not target.tls:
            raise ValueError("store.tls is set but store.url is not a rediss URL")
        sentinel_auth = self.sentinel_username is not None or self.sentinel_password is not None
        if sentinel_auth and target.mode != "sentinel":
            raise ValueError(
                "store.sentinel_username/sentinel_password are set but store.url is not a "
                "redis+sentinel URL"
            )
        return self

    @property
    def target(self) -> RedisTarget:
        """The deployment `url` names (validated at load)."""
        return parse_redis_url(self.url.get_secret_value())


Store = Annotated[MemoryStoreConfig | RedisStoreConfig, Field(discriminator="kind")]


class BufferConfig(Frozen):
    max_items: int = Field(100_000, gt=0, description="samples buffered before the oldest drop")
    flush_interval_s: float = Field(0.2, gt=0)
    batch_size: int = Field(5000, gt=0)


class ScoreboardConfig(Frozen):
    refresh_s: float = Field(1.0, gt=0)
    stale_after_s: float = Field(10.0, gt=0, description="/readyz fails past this age")


class RoutingConfig(Frozen):
    seed: int | None = Field(
        None,
        description="seeds the router's posterior draws and the scoreboard's posteriors, so "
        "a run can be replayed; null: a random seed per process",
    )


class ProberConfig(Frozen):
    """The prober of this replica (docs/probing.md); the schedule itself is policy."""

    enabled: bool = Field(True, description="false: no scheduled probes at all")
    time_scale: float = Field(
        1.0, gt=0, description="multiplies every probe time setting and the budget's hour"
    )
    tick_s: float = Field(0.5, gt=0, description="how often the schedule is looked at")
    max_in_flight: int = Field(16, ge=1, le=1000, description="probes at once, all pairs")
    max_probes_per_hour: int = Field(
        600, ge=0, description="the fleet's: every replica sharing the store spends one budget"
    )
    max_cost_per_hour_usd: float = Field(0.05, ge=0, description="estimated, the fleet's")
    expected_replicas: int = Field(
        1, ge=1, description="while the store is down a replica spends budget / this many"
    )
    full_schedule_pairs: int = Field(
        40, ge=0, description="up to this many pairs every model gets its full schedule"
    )
    unused_interval_s: float = Field(
        21600.0, gt=0, description="beyond full_schedule_pairs: a model without traffic's "
        "pairs are probed once per this (no bursts)",
    )  # fmt: skip
    used_within_s: float = Field(
        3600.0, gt=0, description="a model is used: a client request measured within this"
    )
    unused_share: float = Field(
        0.25, ge=0, le=1, description="beyond full_schedule_pairs: the share of the budget "
        "models without traffic may take together, kept for them as far as they need it",
    )  # fmt: skip
    prices: dict[str, Price] = Field(
        default_factory=dict, description="'provider' or 'model@provider' -> price"
    )
    litellm_prices: bool = Field(
        False,
        description="look up openai-kind pairs in litellm's bundled price map too "
        "(imports litellm); litellm-kind pairs are always looked up",
    )
    unknown_price: Price = Field(
        Price(prompt_per_million=10.0, completion_per_million=30.0),
        description="assumed for a pair whose price is known nowhere (kept high: safe)",
    )


class OtlpConfig(Frozen):
    """OTLP/HTTP export of the TTFT histogram and decision counters (needs the `otel` extra)."""

    enabled: bool = False
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/metrics", description="an OTLP/HTTP collector's metrics URL"
    )
    interval_s: float = Field(15.0, gt=0, le=3600)


class TelemetryConfig(Frozen):
    otlp: OtlpConfig = OtlpConfig()


class ClientStatsConfig(Frozen):
    """What clients may see of the providers behind a model: `GET /v1/models/{model}/endpoints`
    (OpenRouter's per-endpoint uptime, latency and throughput; docs/api.md). Off by default:
    the route then answers 404 as an unknown route does."""

    enabled: bool = Field(False, description="serve GET /v1/models/{model}/endpoints")
    provider_names: bool = Field(
        False, description="name each provider; false: provider-1, provider-2, ... (config order)"
    )


class Config(Frozen):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig
    store: Store = MemoryStoreConfig()
    buffer: BufferConfig = BufferConfig()
    scoreboard: ScoreboardConfig = ScoreboardConfig()
    routing: RoutingConfig = RoutingConfig()
    prober: ProberConfig = ProberConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    client_stats: ClientStatsConfig = ClientStatsConfig()
    providers: dict[str, Provider] = Field(min_length=1)
    models: dict[str, ModelEntry] = Field(min_length=1)
    policies: list[Path] = Field(
        default_factory=list, description="policy files, relative to this file"
    )
    source: Path | None = Field(None, exclude=True, description="set by load_config")

    @model_validator(mode="before")
    @classmethod
    def _auth_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("auth") is None:
            raise ValueError(
                "auth: required: list client keys in auth.api_keys (and admin keys in "
                "auth.admin_keys), or set auth.allow_unauthenticated: true (loopback only)"
            )
        return data

    @model_validator(mode="after")
    def _bound_safely(self) -> Config:
        check_bind(self.auth, self.server.host)
        return self

    @model_validator(mode="after")
    def _providers_known(self) -> Config:
        for model, entry in self.models.items():
            for provider in entry.providers:
                if provider not in self.providers:
                    known = ", ".join(sorted(self.providers))
                    raise ValueError(
                        f"models.{model}.providers.{provider}: unknown provider "
                        f"'{provider}' (known: {known})"
                    )
        return self

    @model_validator(mode="after")
    def _client_models_known(self) -> Config:
        rules = {"auth.anonymous": self.auth.anonymous}
        rules |= {f"auth.clients.{name}": spec for name, spec in self.auth.clients.items()}
        for where, rule in rules.items():
            unknown = [m for m in rule.models or () if m not in self.models]
            if unknown:
                known = ", ".join(self.models)
                raise ValueError(f"{where}.models: unknown model {', '.join(map(repr, unknown))}"
                                 f" (known: {known})")  # fmt: skip
        return self

    def policy_paths(self) -> list[Path]:
        base = self.source.parent if self.source else Path.cwd()
        return [p if p.is_absolute() else base / p for p in self.policies]


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(node: Any, path: str = "") -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string of a YAML tree.

    Raises ValueError naming the dotted path of the first unset variable.
    """
    if isinstance(node, dict):
        return {k: interpolate_env(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_env(v, f"{path}.{i}") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name, default)
        if value is None:
            raise ValueError(f"{path}: environment variable {name} is not set")
        return value

    return _ENV.sub(substitute, node)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; raise ConfigError naming the file on any read or syntax error."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc


def format_validation_error(
    path: Path, exc: ValidationError, tag_at: dict[str, int] | None = None
) -> ConfigError:
    """One readable error per problem: `file: dotted.path: reason`.

    `tag_at` maps a top-level key to the position of a discriminated union's tag in the
    error location (pydantic inserts it), which is dropped from the path shown.
    """
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        drop = (tag_at or {}).get(loc[0]) if loc else None
        if drop is not None and len(loc) > drop + 1:
            del loc[drop]
        where = ".".join(loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {where}: {msg}")
    return ConfigError("\n".join(lines))


_TAG_AT = {"providers": 2, "store": 1}


def parse_config(data: Any, path: Path) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        data = interpolate_env(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        config = Config.model_validate({**data, "source": path})
    except ValidationError as exc:
        raise format_validation_error(path, exc, _TAG_AT) from exc
    return config


def load_config(path: str | Path) -> Config:
    """Read, interpolate and validate a config file. Raises ConfigError on any problem."""
    path = Path(path)
    return parse_config(read_yaml(path), path)
