"""rrlab's ClickHouse migrations: idempotent, recorded, and faithful to the reference TSVs."""

from __future__ import annotations

import csv
from importlib import resources

import pytest
from clickhouse_connect.driver.client import Client

from rrlab.exceptions import ClickHouseError, ConfigError
from rrlab.infra.ch_migrations import MIGRATIONS_TABLE, check_schema, migrations, run_migrations
from tests.fixtures.clickhouse import CH_DATABASE


def _reference(name: str) -> list[dict[str, str]]:
    text = resources.files("rrlab.reference").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))


def test_second_run_applies_nothing(ch_client: Client) -> None:
    assert run_migrations(ch_client, CH_DATABASE) == []
    recorded = ch_client.query(
        f"SELECT version, name FROM {CH_DATABASE}.{MIGRATIONS_TABLE} ORDER BY version"
    ).result_rows
    assert recorded == [(m.version, m.name) for m in migrations(CH_DATABASE)]
    assert [name for _, name in recorded] == ["task_runs_v2", "raw_task_runs_payload_v1"]


def test_fresh_database_gets_every_migration_once(ch_client: Client) -> None:
    database = "rrlab_fresh"
    ch_client.command(f"DROP DATABASE IF EXISTS {database}")
    try:
        assert run_migrations(ch_client, database) == [
            "001_task_runs_v2",
            "002_raw_task_runs_payload_v1",
        ]
        assert run_migrations(ch_client, database) == []
        check_schema(ch_client, database)
    finally:
        ch_client.command(f"DROP DATABASE IF EXISTS {database}")


@pytest.mark.parametrize("table", ["task_runs_v2", "raw_task_runs_payload_v1"])
def test_columns_match_the_reference(ch_client: Client, table: str) -> None:
    rows = ch_client.query(
        "SELECT name, type, default_kind, default_expression, compression_codec "
        "FROM system.columns WHERE database = {db:String} AND table = {t:String} "
        "ORDER BY position",
        parameters={"db": CH_DATABASE, "t": table},
    ).result_rows
    expected = _reference(f"clickhouse_{table}.tsv")
    assert [row[0] for row in rows] == [row["column"] for row in expected]
    for (name, ch_type, kind, expression, codec), want in zip(rows, expected, strict=True):
        assert (name, ch_type, codec) == (want["column"], want["ch_type"], want["codec"])
        if want["default"].startswith("MATERIALIZED"):
            assert kind == "MATERIALIZED", name
        else:
            assert f"{kind} {expression}".strip() == want["default"], name


def test_tables_and_skip_indexes_match_the_reference(ch_client: Client) -> None:
    tables = {
        name: (engine_full, partition_key, sorting_key)
        for name, engine_full, partition_key, sorting_key in ch_client.query(
            "SELECT name, engine_full, partition_key, sorting_key FROM system.tables "
            "WHERE database = {db:String}",
            parameters={"db": CH_DATABASE},
        ).result_rows
    }
    for want in _reference("clickhouse_tables.tsv"):
        expected = (want["engine_full"], want["partition_key"], want["sorting_key"])
        assert tables[want["table"]] == expected
    indexes = set(
        ch_client.query(
            "SELECT table, name, type_full, expr, granularity "
            "FROM system.data_skipping_indices WHERE database = {db:String}",
            parameters={"db": CH_DATABASE},
        ).result_rows
    )
    expected_indexes = {
        (row["table"], row["index"], row["type"], row["expr"], int(row["granularity"]))
        for row in _reference("clickhouse_indexes.tsv")
    }
    assert indexes == expected_indexes


def test_materialized_text_columns(ch_client: Client) -> None:
    cases = {
        "mat_empty": ({}, ""),
        "mat_data": ({"data": {"user": "u_1", "n": 2}}, '{"n":2,"user":"u_1"}'),
        "mat_scalar": ({"data": "hello"}, '"hello"'),
        "mat_other": ({"message": "boom"}, '{"message":"boom"}'),
    }
    columns = ["run_id", "organization_id", "created_at", "updated_at", "output", "error"]
    rows = [[run_id, "org_mat", 0, 0, doc, doc] for run_id, (doc, _) in cases.items()]
    ch_client.insert("task_runs_v2", rows, column_names=columns)
    stored = ch_client.query(
        "SELECT run_id, output_text, error_text FROM task_runs_v2 WHERE organization_id = 'org_mat'"
    ).result_rows
    assert {run_id: (out, err) for run_id, out, err in stored} == {
        run_id: (text, text) for run_id, (_, text) in cases.items()
    }


def test_check_schema_names_the_drifted_column(ch_client: Client) -> None:
    database = "rrlab_drift"
    ch_client.command(f"DROP DATABASE IF EXISTS {database}")
    try:
        run_migrations(ch_client, database)
        check_schema(ch_client, database)
        ch_client.command(f"ALTER TABLE {database}.task_runs_v2 MODIFY COLUMN attempt UInt16")
        ch_client.command(f"ALTER TABLE {database}.raw_task_runs_payload_v1 DROP COLUMN payload")
        with pytest.raises(ClickHouseError) as drifted:
            check_schema(ch_client, database)
        message = str(drifted.value)
        assert "task_runs_v2: column attempt is UInt16, expected UInt8" in message
        assert "raw_task_runs_payload_v1: column payload is missing" in message
        assert f"DROP DATABASE {database}" in message
    finally:
        ch_client.command(f"DROP DATABASE IF EXISTS {database}")


def test_missing_tables_are_drift(ch_client: Client) -> None:
    ch_client.command("CREATE DATABASE IF NOT EXISTS rrlab_empty")
    try:
        with pytest.raises(ClickHouseError, match="table rrlab_empty.task_runs_v2 is missing"):
            check_schema(ch_client, "rrlab_empty")
    finally:
        ch_client.command("DROP DATABASE IF EXISTS rrlab_empty")


@pytest.mark.parametrize("name", ["trigger-dev", "x; DROP DATABASE y", "", "1abc"])
def test_invalid_database_names_are_refused(ch_client: Client, name: str) -> None:
    with pytest.raises(ConfigError, match="database name"):
        run_migrations(ch_client, name)
