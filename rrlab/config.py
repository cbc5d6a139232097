"""The configuration of one run: phases, producer, consumer, profiling, infrastructure, output.

One typed model with the seed harness's defaults. It is loaded from a params file
(YAML or JSON, snake_case or the seed's camelCase keys), then overridden by keyword
arguments, notebook parameters or CLI flags. Every value is checked before anything
starts; a bad one raises :class:`ConfigError` naming the key, the value and what is
allowed. Connection URLs are held as :class:`Secret` so that no repr, log line or
file ever shows a password.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from rrlab.exceptions import ConfigError
from rrlab.urls import mask_url

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_THROUGHPUT = 1_000_000
MAX_PHASE_SECONDS = 24 * 3600

Sink = Literal["chdb", "clickhouse", "mock"]
ProfileMode = Literal["none", "memray", "lines", "both", "flame"]


class Secret:
    """A connection URL whose repr and str never show the password."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The clear value, for opening a connection only."""
        return self._value

    def __repr__(self) -> str:
        return repr(mask_url(self._value))

    def __str__(self) -> str:
        return mask_url(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _limits(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    pattern: re.Pattern[str] | None = None,
    help: str = "",
) -> dict[str, Any]:
    return {"min": minimum, "max": maximum, "pattern": pattern, "help": help}


@dataclass(frozen=True)
class Phase:
    """One load phase: the producers write at ``target_throughput`` for ``duration_s``."""

    name: str = field(metadata=_limits(pattern=RUN_NAME, help="letters, digits, _ . -"))
    duration_s: float = field(metadata=_limits(0.5, MAX_PHASE_SECONDS))
    target_throughput: int = field(metadata=_limits(1, MAX_THROUGHPUT))


def default_phases() -> list[Phase]:
    return [
        Phase(name="warmup", duration_s=30, target_throughput=1_000),
        Phase(name="baseline", duration_s=60, target_throughput=5_000),
    ]


@dataclass(frozen=True)
class ProducerConfig:
    """How the producer processes generate and write TaskRun rows."""

    workers: int = field(default=1, metadata=_limits(1, 64))
    insert_update_ratio: float = field(default=0.8, metadata=_limits(0.0, 1.0))
    delete_ratio: float = field(default=0.0, metadata=_limits(0.0, 1.0))
    batch_size: int = field(default=500, metadata=_limits(1, 100_000))
    payload_size_kb: float = field(default=1.0, metadata=_limits(0.0, 1024))
    super_json_ratio: float = field(default=0.0, metadata=_limits(0.0, 1.0))
    error_rate: float = field(default=0.05, metadata=_limits(0.0, 1.0))
    retry_pause_s: float = field(default=1.0, metadata=_limits(0.0, 60))
    max_restarts: int = field(default=3, metadata=_limits(0, 100))  # for all workers together


@dataclass(frozen=True)
class ConsumerConfig:
    """The replication service under test (names follow the upstream service)."""

    flush_batch_size: int = field(default=50, metadata=_limits(1, 1_000_000))
    flush_interval_ms: int = field(default=100, metadata=_limits(1, 600_000))
    max_flush_concurrency: int = field(default=100, metadata=_limits(1, 1_000))
    # not upstream's (its queue is unbounded): the encoded rows the consumer may hold, pending
    # and in flight, before it stops reading the stream until an insert finishes
    max_buffered_mb: int = field(default=128, metadata=_limits(1, 1_000_000))
    slot_name: str = field(default="profiling_slot", metadata=_limits(pattern=IDENTIFIER))
    publication_name: str = field(
        default="profiling_publication", metadata=_limits(pattern=IDENTIFIER)
    )
    insert_max_retries: int = field(default=3, metadata=_limits(1, 100))
    insert_base_delay_ms: int = field(default=100, metadata=_limits(0, 600_000))
    insert_max_delay_ms: int = field(default=2_000, metadata=_limits(0, 600_000))
    # an insert that has no answer by then is retried (the @clickhouse/client default, 30 s)
    insert_timeout_s: float = field(default=30.0, metadata=_limits(0.1, 3_600))
    mock_delay_ms: float = field(default=0.0, metadata=_limits(0.0, 60_000))
    payload_inserts: bool = True
    error_fingerprinting: bool = True
    max_poison_strips_per_batch: int = field(default=1, metadata=_limits(0, 1_000))
    origin_generation: int = field(default=0, metadata=_limits(0, 255))
    status_interval_s: float = field(default=1.0, metadata=_limits(0.05, 60))
    max_restarts: int = field(default=3, metadata=_limits(0, 100))


@dataclass(frozen=True)
class ProfilingConfig:
    """Which profiler wraps the consumer (or the producer) and how."""

    mode: ProfileMode = "none"
    memray_native: bool = False
    line_targets: list[str] = field(default_factory=list)
    profile_producer: bool = False


@dataclass(frozen=True)
class PostgresConfig:
    """Where the TaskRun table lives: the embedded server, or DATABASE_URL."""

    database_url: Secret | None = None
    database_name: str = field(default="trigger_profiling", metadata=_limits(pattern=IDENTIFIER))
    schema_from: Secret | None = None


@dataclass(frozen=True)
class ClickHouseConfig:
    """Where rows go: embedded chdb, a ClickHouse server (CLICKHOUSE_URL) or the mock sink."""

    sink: Sink = "chdb"
    clickhouse_url: Secret | None = None
    database: str = field(default="trigger_dev", metadata=_limits(pattern=IDENTIFIER))


@dataclass(frozen=True)
class OutputConfig:
    """Where and under which name the run folder is written, and whether the disk must fit it."""

    results_dir: str = "results"
    run_name: str = field(default="run", metadata=_limits(pattern=RUN_NAME))
    verbose: bool = False
    # refuse a run whose embedded PostgreSQL and ClickHouse data would not fit on the disk
    # (rrlab.runner.disk_space); false runs it anyway
    check_disk_space: bool = True


@dataclass(frozen=True)
class ChaosConfig:
    """Faults the runner injects to prove that no change is lost."""

    kill_consumer: int = field(default=0, metadata=_limits(0, 1_000))
    kill_producer: int = field(default=0, metadata=_limits(0, 1_000))
    seed: int | None = None


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, resolved and validated."""

    phases: list[Phase] = field(default_factory=default_phases)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)
    profiling: ProfilingConfig = field(default_factory=ProfilingConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    clickhouse: ClickHouseConfig = field(default_factory=ClickHouseConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    chaos: ChaosConfig = field(default_factory=ChaosConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data with every secret masked: what config.json holds."""
        return _masked(asdict(self))

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """A new config with dotted or nested overrides applied and validated."""
        return build_config(_merge(asdict(self), _nest(overrides)))


# --- loading -----------------------------------------------------------------

_ALIASES = {
    # the seed harness's camelCase names that do not map by case alone
    "duration_sec": "duration_s",
    "payload_size_k_b": "payload_size_kb",
    "worker_count": "workers",
    "mock_clickhouse_delay": "mock_delay_ms",
    "profiling_database_name": "database_name",
    "output_dir": "results_dir",
    "tool": "mode",
}
_SECRET_SETTINGS = (
    ("postgres", "database_url"),
    ("postgres", "schema_from"),
    ("clickhouse", "clickhouse_url"),
)
_SECTION_OF_SEED_KEY = {
    "database_url": "postgres",
    "clickhouse_url": "clickhouse",
    "database_name": "postgres",
}


def snake_case(key: str) -> str:
    """camelCase → snake_case, then the seed's aliases."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).replace("-", "_").lower()
    return _ALIASES.get(snake, snake)


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON params file into plain data."""
    path = Path(path)
    if not path.exists():
        bundled = Path(__file__).resolve().parent.parent / "params" / path.name
        candidates = [path.with_suffix(s) for s in (".yaml", ".yml", ".json")] + [
            bundled.with_suffix(s) for s in (".yaml", ".yml", ".json")
        ]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise ConfigError(
                f"Params file {str(path)!r} does not exist. "
                "Give a path to a .yaml or .json file (see params/)."
            )
        path = found
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Params file {str(path)!r} cannot be read: {exc.strerror}.") from None
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"Params file {str(path)!r} is not valid {kind}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Params file {str(path)!r} must hold a mapping of settings, "
            f"not a {type(data).__name__}."
        )
    return data


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Defaults, then the params file at ``path``, then ``overrides`` (dotted or nested keys)."""
    data = _normalise(read_params_file(path)) if path is not None else {}
    return build_config(_merge(data, _nest(overrides or {})))


def load_child_config(path: str | Path | None) -> RunConfig:
    """A child process's configuration: the run's config.json without its (masked) URLs.

    The clear URLs reach children through their environment, never through files or argv.
    """
    if path is None:
        return build_config({})
    data = _normalise(read_params_file(path))
    for section, key in _SECRET_SETTINGS:
        data.get(section, {}).pop(key, None)
    # a 'clickhouse' sink is valid only with its URL: the one the runner put in the environment
    url = os.environ.get("RRLAB_CLICKHOUSE_URL") or os.environ.get("CLICKHOUSE_URL")
    if url:
        data.setdefault("clickhouse", {})["clickhouse_url"] = url
    return build_config(data)


def build_config(data: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from plain (snake_case) data."""
    return _build(RunConfig, _normalise(data), "")


def _normalise(data: Any) -> Any:
    """snake_case every key, then move the seed harness's keys to where rrlab keeps them."""
    data = _snake_keys(data)
    if not isinstance(data, dict):
        return data
    for key, value in (data.pop("infrastructure", None) or {}).items():
        data.setdefault(_SECTION_OF_SEED_KEY.get(key, "postgres"), {})[key] = value
    for section in ("producer", "consumer", "profiling", "output"):
        settings = data.get(section)
        if isinstance(settings, dict):
            settings.pop("enabled", None)
            if settings.pop("use_mock_clickhouse", False):
                data.setdefault("clickhouse", {})["sink"] = "mock"
    return data


def _snake_keys(data: Any) -> Any:
    if isinstance(data, list):
        return [_snake_keys(item) for item in data]
    if isinstance(data, dict):
        return {snake_case(str(key)): _snake_keys(value) for key, value in data.items()}
    return data


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        target = nested
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return _normalise(nested)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(cls: type, data: Any, path: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'configuration'} must be a mapping of settings, got {data!r}.")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f" in {path}" if path else ""
        raise ConfigError(
            f"Unknown setting {unknown[0]!r}{where}. Allowed: {', '.join(sorted(known))}."
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        kwargs[name] = _coerce(hints[name], value, key, known[name].metadata)
    missing = [
        f.name
        for f in fields(cls)
        if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ConfigError(f"{path or 'configuration'} needs {missing[0]!r}.")
    instance = cls(**kwargs)
    _check_whole(instance, path)
    return instance


def _coerce(hint: Any, value: Any, key: str, meta: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key, meta)
    if hint is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str) and value.strip():
            return Secret(value.strip())
        raise ConfigError(f"{key} must be a URL string, got {_show(value)}.")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{key} = {_show(value)} is not allowed. "
                f"Choose one of: {', '.join(map(str, args))}."
            )
        return value
    if origin is list:
        (item_type,) = args
        if isinstance(value, str) and item_type is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {_show(value)}.")
        return [_coerce(item_type, v, f"{key}[{i}]", {}) for i, v in enumerate(value)]
    if is_dataclass(hint):
        return _build(hint, value, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} must be true or false, got {_show(value)}.")
    if hint in (int, float):
        number = _number(hint, value, key)
        low, high = (meta or {}).get("min"), (meta or {}).get("max")
        if (low is not None and number < low) or (high is not None and number > high):
            raise ConfigError(f"{key} = {_show(value)} is out of range: allowed {low} to {high}.")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {_show(value)}.")
        pattern = (meta or {}).get("pattern")
        if pattern is not None and not pattern.match(value):
            help_text = (meta or {}).get("help") or (
                "lower-case letters, digits and _, starting with a letter or _, "
                "at most 63 characters"
            )
            raise ConfigError(f"{key} = {_show(value)} is not allowed: use {help_text}.")
        return value
    raise TypeError(f"config type {hint!r} of {key} is not supported")


def _number(hint: type, value: Any, key: str) -> int | float:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {_show(value)}.")
    if isinstance(value, str):
        try:
            value = float(value) if hint is float else int(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {_show(value)}.") from None
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, got {_show(value)}.")
        return value
    if not isinstance(value, int | float) or value != value:
        raise ConfigError(f"{key} must be a number, got {_show(value)}.")
    return float(value)


def _check_whole(instance: Any, path: str) -> None:
    """Rules that involve more than one field."""
    if isinstance(instance, RunConfig):
        if not instance.phases:
            raise ConfigError("phases is empty: a run needs at least one phase.")
        names = [p.name for p in instance.phases]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ConfigError(
                f"phases has two phases named {duplicate!r}: phase names must be unique."
            )
        if instance.clickhouse.sink == "clickhouse" and instance.clickhouse.clickhouse_url is None:
            raise ConfigError(
                "clickhouse.sink = 'clickhouse' needs a server: set CLICKHOUSE_URL or "
                "clickhouse.clickhouse_url (https://host:8443?username=...&password=...)."
            )
    if (
        isinstance(instance, ProducerConfig)
        and instance.delete_ratio > 1 - instance.insert_update_ratio
    ):
        raise ConfigError(
            f"producer.delete_ratio = {instance.delete_ratio} is larger than the share of "
            f"non-insert writes (1 - insert_update_ratio = {1 - instance.insert_update_ratio:g}); "
            "deletes are taken from that share."
        )
    if (
        isinstance(instance, ConsumerConfig)
        and instance.insert_base_delay_ms > instance.insert_max_delay_ms
    ):
        raise ConfigError(
            f"consumer.insert_base_delay_ms = {instance.insert_base_delay_ms} exceeds "
            f"insert_max_delay_ms = {instance.insert_max_delay_ms}."
        )
    if isinstance(instance, ProfilingConfig):
        for target in instance.line_targets:
            if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", target):
                raise ConfigError(
                    f"profiling.line_targets entry {target!r} is not module:function "
                    "(e.g. rrlab.service.transform:sort_task_rows)."
                )


def _show(value: Any) -> str:
    return repr(str(value)) if isinstance(value, Secret) else repr(value)


def _masked(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _masked(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_masked(v) for v in data]
    if isinstance(data, Secret):
        return str(data)
    return data


def from_environment(config: RunConfig, environ: dict[str, str]) -> RunConfig:
    """Fill DATABASE_URL / CLICKHOUSE_URL from the environment where the config has none."""
    postgres, clickhouse = config.postgres, config.clickhouse
    if postgres.database_url is None and environ.get("DATABASE_URL"):
        postgres = replace(postgres, database_url=Secret(environ["DATABASE_URL"]))
    if clickhouse.clickhouse_url is None and environ.get("CLICKHOUSE_URL"):
        clickhouse = replace(clickhouse, clickhouse_url=Secret(environ["CLICKHOUSE_URL"]))
    return replace(config, postgres=postgres, clickhouse=clickhouse)
