"""ClickHouse schema: rrlab's migrations (``migrations/NNN_name.sql``) and a drift check.

Migrations create ``task_runs_v2`` and ``raw_task_runs_payload_v1`` as the reference TSVs
describe; each applied one is recorded in ``<database>.rrlab_migrations``, so running them
again applies nothing. :func:`check_schema` compares a live database with the TSVs.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error

from rrlab.exceptions import ClickHouseError, ConfigError

MIGRATIONS_TABLE = "rrlab_migrations"
TABLES = ("task_runs_v2", "raw_task_runs_payload_v1")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MIGRATION_FILE = re.compile(r"(\d+)_([a-z0-9_]+)\.sql\Z")


@dataclass(frozen=True)
class Migration:
    """One migration file: its version, name and SQL statements (``{database}`` filled in)."""

    version: int
    name: str
    statements: tuple[str, ...]


def migrations(database: str) -> list[Migration]:
    """rrlab's migrations in version order, for ``database``."""
    _check_database(database)
    found = []
    for entry in resources.files("rrlab.infra").joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            continue
        sql = entry.read_text(encoding="utf-8").replace("{database}", database)
        statements = tuple(s.strip() for s in re.split(r";\s*$", sql, flags=re.M) if s.strip())
        found.append(Migration(int(match.group(1)), match.group(2), statements))
    return sorted(found, key=lambda m: m.version)


def run_migrations(client: Client, database: str) -> list[str]:
    """Create ``database`` and apply the migrations it lacks; return the names applied."""
    pending = migrations(database)
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.command(
            f"CREATE TABLE IF NOT EXISTS {database}.{MIGRATIONS_TABLE} "
            "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = MergeTree ORDER BY version"
        )
        done = {
            row[0]
            for row in client.query(
                f"SELECT version FROM {database}.{MIGRATIONS_TABLE}"
            ).result_rows
        }
    except Error as exc:
        raise ClickHouseError(
            f"Cannot prepare ClickHouse database {database!r} for migrations: {exc}"
        ) from None
    applied = []
    for migration in pending:
        if migration.version in done:
            continue
        try:
            for statement in migration.statements:
                client.command(statement)
            client.insert(
                f"{database}.{MIGRATIONS_TABLE}",
                [[migration.version, migration.name]],
                column_names=["version", "name"],
            )
        except Error as exc:
            raise ClickHouseError(
                f"ClickHouse migration {migration.version:03d}_{migration.name} failed on "
                f"database {database!r}: {exc}"
            ) from None
        applied.append(f"{migration.version:03d}_{migration.name}")
    return applied


def _reference(name: str) -> list[dict[str, str]]:
    text = resources.files("rrlab.reference").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))


def schema_drift(client: Client, database: str) -> list[str]:
    """Every difference between ``database``'s two tables and the reference TSVs."""
    _check_database(database)
    drift: list[str] = []
    tables = {
        row[0]: row[1:]
        for row in client.query(
            "SELECT name, engine_full, partition_key, sorting_key FROM system.tables "
            "WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
    }
    for expected in _reference("clickhouse_tables.tsv"):
        table = expected["table"]
        if table not in tables:
            drift.append(f"table {database}.{table} is missing")
            continue
        actual = dict(
            zip(("engine_full", "partition_key", "sorting_key"), tables[table], strict=True)
        )
        for key, value in actual.items():
            if value != expected[key]:
                drift.append(f"{table}: {key} is {value!r}, expected {expected[key]!r}")
        drift += _column_drift(client, database, table)
    drift += _index_drift(client, database)
    return drift


def _column_drift(client: Client, database: str, table: str) -> list[str]:
    rows = client.query(
        "SELECT name, type, default_kind, default_expression, compression_codec "
        "FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        parameters={"db": database, "t": table},
    ).result_rows
    actual = {name: (kind, expr, ch_type, codec) for name, ch_type, kind, expr, codec in rows}
    expected = _reference(f"clickhouse_{table}.tsv")
    drift = []
    for row in expected:
        name = row["column"]
        if name not in actual:
            drift.append(f"{table}: column {name} is missing")
            continue
        kind, expr, ch_type, codec = actual[name]
        if ch_type != row["ch_type"]:
            drift.append(f"{table}: column {name} is {ch_type}, expected {row['ch_type']}")
        # The reference spells MATERIALIZED columns' rule in words, so only the kind is compared.
        default = kind if kind == "MATERIALIZED" else f"{kind} {expr}".strip()
        wanted = row["default"].split(" ", 1)[0] if kind == "MATERIALIZED" else row["default"]
        if default != wanted:
            drift.append(f"{table}: column {name} has default {default!r}, expected {wanted!r}")
        if codec != row["codec"]:
            drift.append(f"{table}: column {name} has codec {codec!r}, expected {row['codec']!r}")
    extra = [name for name in actual if name not in {row["column"] for row in expected}]
    drift += [f"{table}: unexpected column {name}" for name in extra]
    if not drift and list(actual) != [row["column"] for row in expected]:
        drift.append(f"{table}: columns are not in the reference order")
    return drift


def _index_drift(client: Client, database: str) -> list[str]:
    actual = {
        (table, name): (index_type, expr, granularity)
        for table, name, index_type, expr, granularity in client.query(
            "SELECT table, name, type_full, expr, granularity FROM system.data_skipping_indices "
            "WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
    }
    drift = []
    for row in _reference("clickhouse_indexes.tsv"):
        key = (row["table"], row["index"])
        wanted = (row["type"], row["expr"], int(row["granularity"]))
        if key not in actual:
            drift.append(f"{row['table']}: skip index {row['index']} is missing")
        elif actual[key] != wanted:
            drift.append(
                f"{row['table']}: skip index {row['index']} is {actual[key]}, expected {wanted}"
            )
    return drift


def check_schema(client: Client, database: str) -> None:
    """Raise :class:`ClickHouseError` naming every drifted table, column or index."""
    try:
        drift = schema_drift(client, database)
    except Error as exc:
        raise ClickHouseError(
            f"Cannot read the schema of ClickHouse database {database!r}: {exc}"
        ) from None
    if drift:
        raise ClickHouseError(
            f"ClickHouse database {database!r} does not match rrlab's schema:\n  - "
            + "\n  - ".join(drift)
            + f"\nDrop the database (DROP DATABASE {database}) or configure another one "
            "(clickhouse.database); rrlab's migrations then create the tables as expected."
        )


def _check_database(database: str) -> None:
    if not isinstance(database, str) or not _IDENTIFIER.match(database):
        raise ConfigError(
            f"ClickHouse database name {database!r} is invalid: use letters, digits and "
            "underscores, starting with a letter or underscore (e.g. trigger_dev)."
        )
