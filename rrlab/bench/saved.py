"""Where and under which names ``rrlab bench drain`` saves its results: shared by the benchmark
and by rrlab.analysis.drains, which reads them without importing the benchmark's machinery."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PG_RECVLOGICAL, MOCK, CHDB = "pg_recvlogical", "mock", "chdb"
VARIANTS = (PG_RECVLOGICAL, MOCK, CHDB)
FOLDER = "bench"
SUFFIX = "-drain.json"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"


def save_result(result: dict[str, Any], results_dir: Path) -> Path:
    """Write the result as ``<results_dir>/bench/<UTC timestamp>-drain.json``; a second
    result of the same second becomes ``<timestamp>-2-drain.json`` (and so on), never
    overwriting one."""
    folder = results_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime(TIME_FORMAT)
    for number in itertools.count(1):
        path = folder / (f"{stamp}{SUFFIX}" if number == 1 else f"{stamp}-{number}{SUFFIX}")
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(json.dumps(result, indent=2))
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


def saved_results(results_dir: str | Path = "results") -> list[Path]:
    """The drain results saved under ``results_dir``, oldest first."""
    return sorted(Path(results_dir).expanduser().glob(f"{FOLDER}/*{SUFFIX}"))
