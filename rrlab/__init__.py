"""rrlab: a Jupyter-first workbench for load-testing and profiling a PostgreSQL → ClickHouse
runs replication service."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["run", "load_run"]


def __getattr__(name: str) -> Any:
    # Lazy, so that the consumer process importing rrlab.* does not pay for polars,
    # plotly and the runner: its memory profile must show the service, not the workbench.
    if name == "run":
        from rrlab.api import run

        return run
    if name == "load_run":
        from rrlab.analysis.load import load_run

        return load_run
    raise AttributeError(f"module 'rrlab' has no attribute {name!r}")
