"""Shared fixtures: a real embedded PostgreSQL and a real chdb endpoint, started once per session."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.clickhouse"]
