"""rrlab: a Jupyter-first workbench for load-testing and profiling a PostgreSQL → ClickHouse
runs replication service."""

__version__ = "0.1.0"
