"""``rrlab.run(...)``: one run from options to a results folder. The CLI and notebooks call it."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rrlab.config import RunConfig, from_environment, load_config
from rrlab.exceptions import ConfigError, ResultsError, RrlabError, RunInterruptedError
from rrlab.profiling.wrappers import finish_profiles, wrapper_for
from rrlab.results import (
    create_run_dir,
    no_group_or_world_writes,
    run_metadata,
    write_config,
    write_metrics,
)
from rrlab.runner.disk_space import check_run_disk_space
from rrlab.runner.infrastructure import prepared_infrastructure
from rrlab.runner.metrics import outage_summary
from rrlab.runner.orchestrator import Orchestrator, RunInterrupted, interrupts_as_exceptions
from rrlab.verify import verify_run

log = logging.getLogger(__name__)

SHORT_WARMUP = {"name": "warmup", "duration_s": 5, "target_throughput": 1000}

ENVIRONMENT_URLS = {
    "DATABASE_URL": "postgres.database_url",
    "CLICKHOUSE_URL": "clickhouse.clickhouse_url",
}

# run() keyword → dotted configuration key
OPTION_KEYS = {
    "sink": "clickhouse.sink",
    "profile": "profiling.mode",
    "output": "output.results_dir",
    "run_name": "output.run_name",
    "verbose": "output.verbose",
    "database_url": "postgres.database_url",
    "clickhouse_url": "clickhouse.clickhouse_url",
    "flush_batch_size": "consumer.flush_batch_size",
    "flush_interval_ms": "consumer.flush_interval_ms",
    "max_flush_concurrency": "consumer.max_flush_concurrency",
    "mock_delay_ms": "consumer.mock_delay_ms",
    "workers": "producer.workers",
    "insert_update_ratio": "producer.insert_update_ratio",
    "payload_size_kb": "producer.payload_size_kb",
    "batch_size": "producer.batch_size",
}


def resolve_config(
    config: str | Path | RunConfig | None = None,
    *,
    throughput: int | None = None,
    duration: float | None = None,
    mock_clickhouse: bool = False,
    chaos: str | None = None,
    overrides: dict[str, Any] | None = None,
    **options: Any,
) -> RunConfig:
    """Params file (or defaults), then DATABASE_URL / CLICKHOUSE_URL from the environment,
    then options; validated once, so ``sink="clickhouse"`` may take its URL from the environment."""
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise TypeError(f"run() got unknown option {unknown[0]!r}; known: {sorted(OPTION_KEYS)}")
    flat = {key: os.environ[name] for name, key in ENVIRONMENT_URLS.items() if os.environ.get(name)}
    flat.update({OPTION_KEYS[k]: v for k, v in options.items() if v is not None})
    if mock_clickhouse:
        flat["clickhouse.sink"] = "mock"
    if chaos:
        flat.update(parse_chaos(chaos))
    flat.update(overrides or {})
    base = config if isinstance(config, RunConfig) else load_config(config)
    resolved = base.with_overrides(flat)
    if throughput is not None or duration is not None:
        _check_number("throughput", throughput, "records per second, e.g. 15000")
        _check_number("duration", duration, "seconds per phase, e.g. 60")
        phases = _phases_from(resolved, throughput, duration, single=config is None)
        resolved = resolved.with_overrides({"phases": phases})
    return from_environment(resolved, dict(os.environ))


def parse_chaos(spec: str) -> dict[str, Any]:
    """``kill-consumer=N,kill-producer=N[,seed=S]`` (any of them) → chaos settings."""
    settings: dict[str, Any] = {}
    for item in spec.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in ("kill-consumer", "kill-producer", "seed"):
            raise ConfigError(
                f"--chaos {spec!r} is not understood: use kill-consumer=N and/or "
                "kill-producer=N (SIGKILL the consumer, or a producer, N times during the "
                "load phases), comma-separated, optionally ,seed=S."
            )
        settings[f"chaos.{key.replace('-', '_')}"] = value
    return settings


def _check_number(name: str, value: Any, meaning: str) -> None:
    """Name the option (``-t`` / ``-d``, the notebook's ``throughput`` / ``duration``) the user
    set, rather than the phase field it is copied into."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ConfigError(
            f"{name} must be a number of {meaning}; got {value!r} ({type(value).__name__}). "
            f"With papermill, pass it unquoted: -p {name} {meaning.rpartition(' ')[2]}."
        )


def _phases_from(config: RunConfig, throughput, duration, single: bool) -> list[dict[str, Any]]:
    """-t/-d without a params file: a short warmup and one phase; with one: override each."""
    if single:
        return [
            SHORT_WARMUP,
            {
                "name": "load",
                "duration_s": 60 if duration is None else duration,
                "target_throughput": 5000 if throughput is None else throughput,
            },
        ]
    return [
        {
            "name": p.name,
            "duration_s": duration if duration is not None else p.duration_s,
            "target_throughput": throughput if throughput is not None else p.target_throughput,
        }
        for p in config.phases
    ]


def run(
    config: str | Path | RunConfig | None = None,
    *,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Run the phases of ``config`` and return the run folder.

    Options are those of ``rrlab run``: throughput, duration, sink, mock_clickhouse,
    profile, output, run_name, verbose, flush_batch_size, ... (see OPTION_KEYS) and
    ``overrides`` (dotted keys). Raises RrlabError with a clear message on bad input.
    """
    resolved = resolve_config(config, **options)
    with no_group_or_world_writes():
        return _run(resolved, progress)


def _run(resolved: RunConfig, progress: bool) -> Path:
    # before the run folder, PostgreSQL's set-up (which truncates TaskRun) and any process
    check_run_disk_space(resolved)
    run_dir = create_run_dir(resolved)
    write_config(run_dir, resolved)
    metadata = run_metadata(resolved, run_dir)
    phases: list[dict[str, Any]] = []
    orchestrator: Orchestrator | None = None
    try:
        with interrupts_as_exceptions(), prepared_infrastructure(resolved, run_dir) as infra:
            metadata["postgres_version"] = infra.postgres_version
            metadata["clickhouse_version"] = infra.clickhouse_version
            orchestrator = Orchestrator(
                resolved,
                run_dir,
                infra,
                progress=progress,
                consumer_wrapper=partial(wrapper_for, resolved.profiling, run_dir),
                producer_wrapper=lambda name, attempt: wrapper_for(
                    resolved.profiling, run_dir, attempt, process=name
                ),
            )
            phases = orchestrator.run()
            metadata["status"] = "complete"
    except (RunInterrupted, KeyboardInterrupt) as exc:
        metadata["error"] = f"interrupted ({exc or 'SIGINT'})"
        raise RunInterruptedError(
            f"The run was interrupted ({exc or 'SIGINT'}); the metrics gathered so far are "
            f"in {run_dir}/metrics.json, marked incomplete.",
            run_dir,
        ) from None
    except RrlabError as exc:
        metadata["error"] = str(exc)
        raise
    finally:
        if orchestrator is not None:
            phases = orchestrator.phases_done
            metadata["consumer_restarts"] = orchestrator.consumer_restarts
            metadata["producer_restarts"] = orchestrator.producer_restarts
            metadata.update(outage_summary(orchestrator.recorder.sink_outages()))
        metadata["ended_at"] = datetime.now(UTC).isoformat()
        _save_results(run_dir, metadata, phases, orchestrator)
    if resolved.clickhouse.sink != "mock":
        metadata["verify"] = _verify(resolved, run_dir)
        write_metrics(run_dir, metadata, phases)
    return run_dir


def _save_results(
    run_dir: Path,
    metadata: dict[str, Any],
    phases: list[dict[str, Any]],
    orchestrator: Orchestrator | None,
) -> None:
    """metrics.json first (the run's summary, small), then the time series and profiles.

    Each is tried even when an earlier one failed (a full or read-only disk), so whatever
    fits is kept; the failures become one ResultsError that also says how the run ended.
    """
    writes = [partial(write_metrics, run_dir, metadata, phases)]
    if orchestrator is not None:
        writes.append(partial(orchestrator.recorder.write, run_dir / "timeseries"))
    writes.append(partial(finish_profiles, run_dir))
    failures = []
    for write in writes:
        try:
            write()
        except ResultsError as exc:
            failures.append(str(exc))
    if failures:
        outcome = f" The run itself ended with: {metadata['error']}" if metadata["error"] else ""
        raise ResultsError(" ".join(dict.fromkeys(failures)) + outcome)


def _verify(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Compare PostgreSQL with ClickHouse after the run; the outcome goes into metrics.json."""
    database_url, clickhouse_url = config.postgres.database_url, config.clickhouse.clickhouse_url
    try:
        report = verify_run(
            run_dir,
            database_url=database_url.reveal() if database_url else None,
            clickhouse_url=clickhouse_url.reveal() if clickhouse_url else None,
        )
    except RrlabError as exc:
        log.error("verify could not compare PostgreSQL with ClickHouse: %s", exc)
        return {"ok": False, "error": str(exc)}
    (log.info if report.ok else log.error)("verify: %s", report.summary())
    return report.to_dict()
