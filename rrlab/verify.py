"""Does ClickHouse hold what PostgreSQL holds? Compare TaskRun with task_runs_v2 (FINAL).

:func:`verify` compares two live databases; :func:`verify_run` finds a run folder's databases
(the embedded ones, or the user's servers named by DATABASE_URL / CLICKHOUSE_URL) and writes
``verify.json`` beside the run's metrics.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseDriverError
from psycopg import sql

from rrlab.config import IDENTIFIER
from rrlab.exceptions import ClickHouseError, ConfigError, PostgresError, ResultsError
from rrlab.infra.clickhouse import READY_FILE, EmbeddedClickHouse, clickhouse_client
from rrlab.infra.embedded_postgres import EmbeddedPostgres
from rrlab.infra.postgres import connect
from rrlab.infra.taskrun_schema import TABLE
from rrlab.results import write_json
from rrlab.urls import mask_text, mask_url, parse_postgres_url

VERIFY_FILE = "verify.json"
_RUNS_SCHEMA = {"run_id": pl.String, "status": pl.String, "updated_at": pl.Int64}


@dataclass(frozen=True)
class StaleRun:
    """A run in both databases whose status or updated_at (epoch ms) differ."""

    run_id: str
    postgres_status: str
    postgres_updated_at: int
    clickhouse_status: str
    clickhouse_updated_at: int
    clickhouse_version: int

    def describe(self) -> str:
        return (
            f"{self.run_id}: PostgreSQL {self.postgres_status} at "
            f"{_iso_ms(self.postgres_updated_at)}, ClickHouse {self.clickhouse_status} at "
            f"{_iso_ms(self.clickhouse_updated_at)} (_version {self.clickhouse_version})"
        )


@dataclass(frozen=True)
class VerifyReport:
    """Counts of each kind of difference and the first ``sample`` run ids of each (sorted).

    ``payload_missing`` is ``None`` when payloads were not checked (payload inserts off).
    ``duplicates`` counts run ids that appear more than once in task_runs_v2 FINAL, which
    happens only when a run's sorting-key columns changed between versions.
    """

    postgres_rows: int
    clickhouse_rows: int
    missing: int
    extra: int
    stale: int
    duplicates: int
    payload_rows: int | None
    payload_missing: int | None
    missing_ids: list[str] = field(default_factory=list)
    extra_ids: list[str] = field(default_factory=list)
    stale_runs: list[StaleRun] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    payload_missing_ids: list[str] = field(default_factory=list)
    postgres: str = ""
    clickhouse: str = ""
    database: str = ""
    created_since: str | None = None
    checked_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def ok(self) -> bool:
        """True when ClickHouse holds exactly PostgreSQL's runs, each as PostgreSQL has it."""
        return not (
            self.missing or self.extra or self.stale or self.duplicates or self.payload_missing
        )

    def summary(self) -> str:
        """A few lines for a terminal or a notebook cell."""
        scope = f", runs created since {self.created_since}" if self.created_since else ""
        lines = [
            f"verify {'OK' if self.ok else 'FAILED'}: PostgreSQL {self.postgres or '?'} "
            f"vs ClickHouse {self.clickhouse or '?'} database {self.database}{scope}",
            f"  rows: PostgreSQL {self.postgres_rows}, ClickHouse (FINAL, live) "
            f"{self.clickhouse_rows}",
            _count_line("missing (not in ClickHouse)", self.missing, self.missing_ids),
            _count_line("extra (not in PostgreSQL)", self.extra, self.extra_ids),
            _count_line("stale (status or updated_at differ)", self.stale, []),
        ]
        lines += [f"      {run.describe()}" for run in self.stale_runs]
        if self.missing == self.postgres_rows > 0 and self.extra == self.clickhouse_rows > 0:
            lines.append(
                "  no run in common: PostgreSQL probably holds a later run's rows (runs with the "
                "same postgres.database_name empty it at start); verify right after a run."
            )
        if self.duplicates:
            lines.append(
                _count_line("duplicated in ClickHouse FINAL", self.duplicates, self.duplicate_ids)
            )
        if self.payload_missing is None:
            lines.append("  payloads: not checked (consumer.payload_inserts is off)")
        else:
            lines.append(
                _count_line(
                    f"runs without a payload row (payload run ids: {self.payload_rows})",
                    self.payload_missing,
                    self.payload_missing_ids,
                )
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what verify.json holds), ``ok`` included."""
        return {
            "ok": self.ok,
            "checked_at": self.checked_at,
            "postgres": self.postgres,
            "clickhouse": self.clickhouse,
            "database": self.database,
            "created_since": self.created_since,
            "postgres_rows": self.postgres_rows,
            "clickhouse_rows": self.clickhouse_rows,
            "missing": self.missing,
            "extra": self.extra,
            "stale": self.stale,
            "duplicates": self.duplicates,
            "payload_rows": self.payload_rows,
            "payload_missing": self.payload_missing,
            "missing_ids": self.missing_ids,
            "extra_ids": self.extra_ids,
            "stale_runs": [vars(run) for run in self.stale_runs],
            "duplicate_ids": self.duplicate_ids,
            "payload_missing_ids": self.payload_missing_ids,
        }


def _count_line(label: str, count: int, ids: list[str]) -> str:
    first = f": {', '.join(ids)}{' …' if count > len(ids) else ''}" if ids else ""
    return f"  {label}: {count}{first}"


def _iso_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


# --- comparing two databases ------------------------------------------------------------


def verify(
    database_url: str,
    clickhouse_client: Client,
    database: str = "trigger_dev",
    sample: int = 5,
    *,
    created_since: datetime | None = None,
    check_payloads: bool = True,
) -> VerifyReport:
    """Compare the profiling database's TaskRun (``database_url``) with ClickHouse.

    ClickHouse is read with FINAL and without rows whose winning version is a delete, so a
    run deleted in PostgreSQL must be gone there too. ``created_since`` (UTC) limits both
    sides to runs created from then on: a user's ClickHouse keeps earlier runs' rows.
    """
    if not IDENTIFIER.match(database):
        raise ConfigError(
            f"ClickHouse database name {database!r} is invalid: use lower-case letters, digits "
            "and _, starting with a letter or _ (e.g. trigger_dev)."
        )
    since_ms = None if created_since is None else _epoch_ms(created_since)
    postgres = _postgres_runs(database_url, created_since)
    clickhouse = _clickhouse_runs(clickhouse_client, database, since_ms)
    duplicated = clickhouse.filter(pl.col("run_id").is_duplicated())["run_id"].unique()
    # Of a duplicated run id, the newest version speaks for the run.
    clickhouse = clickhouse.sort("_version", descending=True).unique("run_id", keep="first")

    missing = postgres.join(clickhouse, on="run_id", how="anti")
    extra = clickhouse.join(postgres, on="run_id", how="anti")
    stale = (
        postgres.join(clickhouse, on="run_id", how="inner", suffix="_ch")
        .filter(
            (pl.col("status") != pl.col("status_ch"))
            | (pl.col("updated_at") != pl.col("updated_at_ch"))
        )
        .sort("run_id")
    )
    payload_rows = payload_missing = None
    payload_missing_ids: list[str] = []
    if check_payloads:
        payload_ids = _payload_run_ids(clickhouse_client, database, since_ms)
        payload_rows = payload_ids.height
        absent = postgres.join(payload_ids, on="run_id", how="anti")
        payload_missing, payload_missing_ids = absent.height, _first_ids(absent, sample)
    return VerifyReport(
        postgres_rows=postgres.height,
        clickhouse_rows=clickhouse.height,
        missing=missing.height,
        extra=extra.height,
        stale=stale.height,
        duplicates=duplicated.len(),
        payload_rows=payload_rows,
        payload_missing=payload_missing,
        missing_ids=_first_ids(missing, sample),
        extra_ids=_first_ids(extra, sample),
        stale_runs=[
            StaleRun(
                run_id=row["run_id"],
                postgres_status=row["status"],
                postgres_updated_at=row["updated_at"],
                clickhouse_status=row["status_ch"],
                clickhouse_updated_at=row["updated_at_ch"],
                clickhouse_version=row["_version"],
            )
            for row in stale.head(sample).iter_rows(named=True)
        ],
        duplicate_ids=sorted(duplicated.to_list())[:sample],
        payload_missing_ids=payload_missing_ids,
        postgres=mask_url(database_url),
        clickhouse=mask_url(getattr(clickhouse_client, "url", "")),
        database=database,
        created_since=None if created_since is None else created_since.isoformat(),
    )


def _first_ids(frame: pl.DataFrame, sample: int) -> list[str]:
    return frame["run_id"].sort().head(sample).to_list()


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("created_since must be timezone-aware (UTC)")
    return int(moment.timestamp() * 1000)


def _postgres_runs(database_url: str, created_since: datetime | None) -> pl.DataFrame:
    """(run_id, status, updated_at epoch ms) of every TaskRun, streamed out with COPY."""
    url = parse_postgres_url(database_url)
    # updatedAt is timestamp(3) without time zone holding UTC, as the transform reads it.
    select = sql.SQL(
        'SELECT "id", "status"::text, floor(extract(epoch FROM "updatedAt") * 1000)::bigint FROM {}'
    ).format(sql.Identifier(TABLE))
    params: tuple[Any, ...] = ()
    if created_since is not None:
        select += sql.SQL(' WHERE "createdAt" >= %s')
        params = (created_since.astimezone(UTC).replace(tzinfo=None),)
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(select)
    buffer = io.BytesIO()
    try:
        with (
            connect(url) as conn,
            conn.cursor() as cursor,
            cursor.copy(statement, params) as copy,
        ):
            for chunk in copy:
                buffer.write(chunk)
    except psycopg.errors.UndefinedTable:
        raise PostgresError(
            f"Database {url.dbname!r} on {url.host}:{url.port} has no {TABLE} table: it is not "
            "an rrlab profiling database. Check postgres.database_name and DATABASE_URL."
        ) from None
    except psycopg.Error as exc:
        raise PostgresError(
            f"Reading {TABLE} from {url.masked} failed: "
            f"{mask_text(str(exc).strip(), (url.password,))}"
        ) from None
    if buffer.tell() == 0:
        return pl.DataFrame(schema=_RUNS_SCHEMA)
    buffer.seek(0)
    return pl.read_csv(buffer, has_header=False, schema=_RUNS_SCHEMA)


def _clickhouse_runs(client: Client, database: str, since_ms: int | None) -> pl.DataFrame:
    """(run_id, status, updated_at epoch ms, _version) of every live run in task_runs_v2 FINAL."""
    # FINAL keeps each run's newest version and hides it when that version is a delete; the
    # explicit filter, applied after FINAL, says so for servers and versions alike.
    query = (
        "SELECT run_id, toString(status) AS status, "
        "toUnixTimestamp64Milli(updated_at) AS updated_at, _version "
        f"FROM {database}.task_runs_v2 FINAL WHERE _is_deleted = 0"
    )
    frame = _query_frame(client, query, database, "task_runs_v2", since_ms)
    schema = {**_RUNS_SCHEMA, "_version": pl.UInt64}
    return frame.cast(schema) if frame.width else pl.DataFrame(schema=schema)


def _payload_run_ids(client: Client, database: str, since_ms: int | None) -> pl.DataFrame:
    query = f"SELECT DISTINCT run_id FROM {database}.raw_task_runs_payload_v1 WHERE 1"
    frame = _query_frame(client, query, database, "raw_task_runs_payload_v1", since_ms)
    return frame if frame.width else pl.DataFrame(schema={"run_id": pl.String})


def _query_frame(
    client: Client, query: str, database: str, table: str, since_ms: int | None
) -> pl.DataFrame:
    parameters = {}
    if since_ms is not None:
        query += " AND created_at >= fromUnixTimestamp64Milli({since:Int64})"
        parameters["since"] = since_ms
    try:
        table_data = client.query_arrow(query, parameters=parameters, use_strings=True)
    except ClickHouseDriverError as exc:
        raise ClickHouseError(
            f"Reading {database}.{table} from ClickHouse failed: {mask_text(str(exc))}. Check "
            "clickhouse.database and that rrlab's migrations ran there."
        ) from None
    frame = pl.from_arrow(table_data)
    assert isinstance(frame, pl.DataFrame)
    return frame


# --- a run folder -------------------------------------------------------------------------


def verify_run(
    run_dir: Path | str,
    *,
    database_url: str | None = None,
    clickhouse_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    sample: int = 5,
) -> VerifyReport:
    """Verify a run folder's databases and write ``RUN_DIR/verify.json``.

    Embedded defaults: the embedded PostgreSQL (started if needed) and the embedded
    ClickHouse on ``RUN_DIR/clickhouse`` (reused if it runs, else started and stopped again).
    ``database_url`` / ``clickhouse_url`` (the server, not the profiling database) override
    both; for a run on a user's server they are needed, else DATABASE_URL / CLICKHOUSE_URL
    in ``environ`` (default: the process environment), as config.json holds them masked.
    PostgreSQL holds the profiling database's current state, so verify a run before another
    run with the same ``postgres.database_name`` empties it.
    """
    run_dir = Path(run_dir)
    environ = os.environ if environ is None else environ
    config = _read_json(run_dir / "config.json", required=True)
    started_at = _run_started_at(run_dir)
    try:
        postgres, clickhouse = config["postgres"], config["clickhouse"]
        database_name, sink = postgres["database_name"], clickhouse["sink"]
        ch_database = clickhouse["database"]
        check_payloads = bool(config.get("consumer", {}).get("payload_inserts", True))
    except (KeyError, TypeError) as exc:
        raise ResultsError(
            f"{run_dir / 'config.json'} lacks {exc} and is not an rrlab run configuration."
        ) from None
    if sink == "mock":
        raise ResultsError(
            f"The run in {run_dir} used the mock sink: it wrote nothing to ClickHouse, so there "
            "is nothing to verify."
        )
    server_url = _postgres_server_url(postgres, database_url, environ)
    profiling_url = parse_postgres_url(server_url).with_dbname(database_name).url
    with _clickhouse_url(run_dir, clickhouse, clickhouse_url, environ) as (url, where):
        client = clickhouse_client(url)
        try:
            report = verify(
                profiling_url,
                client,
                ch_database,
                sample,
                created_since=started_at,
                check_payloads=check_payloads,
            )
        finally:
            client.close()
    report = replace(report, clickhouse=where)
    write_json(run_dir / VERIFY_FILE, report.to_dict())
    return report


def _run_started_at(run_dir: Path) -> datetime | None:
    """metrics.json's ``run.started_at``: the run created every TaskRun after it."""
    run = _read_json(run_dir / "metrics.json", required=False).get("run")
    started_at = run.get("started_at") if isinstance(run, dict) else None
    if started_at is None:
        return None
    try:
        moment = datetime.fromisoformat(str(started_at))
    except ValueError:
        raise ResultsError(
            f"{run_dir / 'metrics.json'}: run.started_at {started_at!r} is not an ISO-8601 time."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _read_json(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not required:
            return {}
        raise ResultsError(
            f"{path} does not exist: {path.parent} is not an rrlab run folder (give the folder "
            "that holds config.json and metrics.json)."
        ) from None
    except (OSError, ValueError) as exc:
        raise ResultsError(f"Cannot read {path}: {exc}.") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path} does not hold a JSON object.")
    return data


def _postgres_server_url(
    postgres: dict[str, Any], given: str | None, environ: Mapping[str, str]
) -> str:
    """The clear-text URL of the run's PostgreSQL server (its database is replaced later)."""
    recorded = postgres.get("database_url")
    if given:
        return given
    if recorded is None:
        return EmbeddedPostgres().start().url
    url = environ.get("DATABASE_URL")
    if not url:
        raise ConfigError(
            f"The run used the user's PostgreSQL server {recorded}; its run folder keeps the "
            "URL masked. Give the URL with the password in DATABASE_URL (or --database-url)."
        )
    return url


@contextlib.contextmanager
def _clickhouse_url(
    run_dir: Path, clickhouse: dict[str, Any], given: str | None, environ: Mapping[str, str]
) -> Iterator[tuple[str, str]]:
    """The clear-text URL of the run's ClickHouse and a masked description of it.

    For the embedded sink that is the endpoint serving ``RUN_DIR/clickhouse``: the running
    one (a second engine cannot open a data dir one holds), or one started for the duration.
    """
    if given:
        yield given, mask_url(given)
        return
    if clickhouse["sink"] == "chdb":
        data_dir = run_dir / "clickhouse"
        if not data_dir.is_dir():
            raise ResultsError(
                f"{data_dir} does not exist: the run's embedded ClickHouse data is gone, so "
                "there is nothing to compare with."
            )
        where = f"embedded ({data_dir})"
        running = _running_endpoint_url(data_dir)
        if running is not None:
            yield running, where
            return
        with EmbeddedClickHouse(data_dir) as endpoint:
            yield endpoint.url, where
        return
    url = environ.get("CLICKHOUSE_URL")
    if not url:
        raise ConfigError(
            f"The run used the user's ClickHouse server {clickhouse.get('clickhouse_url')}; its "
            "run folder keeps the URL masked. Give the URL with the password in CLICKHOUSE_URL "
            "(or --clickhouse-url)."
        )
    yield url, mask_url(url)


def _running_endpoint_url(data_dir: Path) -> str | None:
    """The URL of a live endpoint on ``data_dir`` (e.g. the run's own), from its ready file."""
    try:
        info = json.loads((data_dir / READY_FILE).read_text())
        pid, port = int(info["pid"]), int(info["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a killed server's leftover ready file
    except PermissionError:
        pass  # alive, owned by another user
    return f"http://127.0.0.1:{port}"
