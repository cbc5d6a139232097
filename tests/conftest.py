"""Shared fixtures: a real embedded PostgreSQL and a real chdb endpoint, one per session."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.clickhouse"]
