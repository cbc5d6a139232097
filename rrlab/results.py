"""The run folder: where a run's configuration, metrics, time series and profiles are written.

Layout (documented in docs/results.md)::

    results/<YYYY-MM-DD>/<HHMMSS>-<run-name>/
        config.json        resolved configuration, secrets masked
        metrics.json       run metadata + one object per phase
        timeseries/*.parquet
        logs/*.log
        profiles/...
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rrlab import __version__
from rrlab.config import RunConfig
from rrlab.exceptions import ResultsError
from rrlab.urls import mask_text

METRICS_SCHEMA_VERSION = 1
FILE_MODE = 0o644
DIR_MODE = 0o755


@contextlib.contextmanager
def no_group_or_world_writes() -> Iterator[None]:
    """Inside, nothing rrlab or its children create is group- or world-writable, whatever the
    caller's umask (children inherit it: their logs, profiles and parquet files too)."""
    previous = os.umask(0o022)
    os.umask(previous | 0o022)
    try:
        yield
    finally:
        os.umask(previous)


def create_run_dir(config: RunConfig, now: datetime | None = None) -> Path:
    """Create ``<results_dir>/<date>/<time>-<run name>/`` with its sub-folders."""
    now = now or datetime.now(UTC)
    base = Path(config.output.results_dir).expanduser()
    name = f"{now:%H%M%S}-{config.output.run_name}"
    run_dir = base / f"{now:%Y-%m-%d}" / name
    suffix = 1
    try:
        while run_dir.exists():
            suffix += 1
            run_dir = base / f"{now:%Y-%m-%d}" / f"{name}-{suffix}"
        for sub in ("", "timeseries", "logs", "profiles"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as exc:
        raise ResultsError(
            f"Cannot write the results folder {str(base)!r}: {exc.strerror or exc}. "
            "Choose a writable folder with --output DIR (or output.results_dir), "
            "or free some disk space."
        ) from None
    return run_dir.resolve()


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (temp file + rename), so a reader never sees half a file and
    a full disk leaves no partial one behind (the temp file is removed)."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise ResultsError(
            f"Cannot write {str(path)!r}: {exc.strerror or exc}. Free some disk space, or "
            "choose a writable results folder with --output DIR (or output.results_dir)."
        ) from None


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, URLs' secrets masked."""
    text = mask_text(json.dumps(data, indent=2, default=str, allow_nan=False))
    write_file(path, (text + "\n").encode("utf-8"))


def write_config(run_dir: Path, config: RunConfig) -> None:
    write_json(run_dir / "config.json", config.to_dict())


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the rrlab checkout, if it is one."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def run_metadata(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """What makes a metrics file explain itself: software, machine, configuration summary."""
    return {
        "name": config.output.run_name,
        "run_dir": str(run_dir),
        "rrlab_version": __version__,
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "sink": config.clickhouse.sink,
        "profile": config.profiling.mode,
        "postgres_version": None,
        "clickhouse_version": None,
        "started_at": datetime.now(UTC).isoformat(),
        "ended_at": None,
        "status": "incomplete",
        "consumer_restarts": 0,
        "producer_restarts": 0,
        "error": None,
    }


def write_metrics(run_dir: Path, run: dict[str, Any], phases: list[dict[str, Any]]) -> None:
    write_json(
        run_dir / "metrics.json",
        {"schema_version": METRICS_SCHEMA_VERSION, "run": run, "phases": phases},
    )
