"""Free-disk-space pre-flight check: what a run will write on this machine, against what is free.

Only what rrlab itself stores here counts: the embedded PostgreSQL's data dir (TaskRun table
and the WAL it keeps, when no database_url is given) and the run folder's embedded ClickHouse
(sink ``chdb``). Stores on one filesystem are added up. An estimate above the free space
(with a margin) refuses the run before anything starts; one above half of it logs a warning.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rrlab.config import RunConfig
from rrlab.exceptions import RunError
from rrlab.infra.embedded_postgres import SERVER_SETTINGS, EmbeddedPostgres

log = logging.getLogger(__name__)

# Bytes per record (one insert, update or delete of the producers' default 80/20 mix) at the
# measured payload sizes, 2026-11-27 on the 2-core CI machine, with a fresh RRLAB_HOME:
#   RRLAB_HOME=/tmp/disk-home python -m rrlab run -c P.yaml --output /tmp/disk-runs --no-progress
# P.yaml: one phase, workers 1, batch_size 500, sink chdb, and (payload_size_kb, rate x seconds
# = records): (0, 3000/s x 30 = 90,000), (1, 3000/s x 40 = 120,000), (8, 1500/s x 40 = 60,000),
# (32, 500/s x 30 = 15,000). After each run:
#   table: pg_total_relation_size('"TaskRun"') (heap, TOAST and indexes; set-up truncates it)
#          = 112,558,080 / 269,647,872 / 165,634,048 / 117,235,712 bytes;
#   WAL:   pg_current_wal_lsn() after minus before the run (du -sb pg_wal grew alike)
#          = 197,087,656 / 393,477,360 / 243,980,024 / 134,218,688 bytes;
#   ClickHouse: du -sb <run>/clickhouse = 66,643,617 / 152,018,429 / 220,808,852 /
#          497,047,728 bytes. About 60% of that is parts already merged away, which
#          ClickHouse deletes only 8 minutes later (old_parts_lifetime): it is on disk
#          while a run lasts, so it counts.
# Per KB the cost falls past 1 KB, where PostgreSQL starts compressing rows into TOAST
# (the generated payloads are words, which compress well); ClickHouse's LZ4 blocks stop
# finding repeats across rows once a payload outgrows them, so its cost per KB rises again.
PAYLOAD_KB_MEASURED = (0.0, 1.0, 8.0, 32.0)
POSTGRES_TABLE_BYTES = (1251.0, 2247.0, 2761.0, 7816.0)
POSTGRES_WAL_BYTES = (2190.0, 3279.0, 4066.0, 8948.0)
CLICKHOUSE_BYTES = (740.0, 1267.0, 3680.0, 33137.0)

# Refuse when the estimate plus this share of it does not fit: the footprints come from single
# short runs (a longer one adds full-page images after checkpoints, and ClickHouse rewrites
# parts while merging), and a filesystem at 100% stops PostgreSQL and ClickHouse mid-run.
MARGIN = 0.10
# Warn when the estimate takes more than this share of the free space.
WARN_SHARE = 0.5
SKIP_SETTING = "output.check_disk_space"


@dataclass(frozen=True)
class DiskNeed:
    """Bytes one store of the run will write under ``path`` (which may not exist yet)."""

    what: str
    path: Path
    bytes: int
    detail: str = ""


def per_record_bytes(measured: tuple[float, ...], payload_kb: float) -> float:
    """Bytes per record at ``payload_kb``: linear between the measured payload sizes, and
    beyond the largest along its last segment."""
    sizes = PAYLOAD_KB_MEASURED
    index = min(max(bisect_right(sizes, payload_kb) - 1, 0), len(sizes) - 2)
    low, high = sizes[index], sizes[index + 1]
    slope = (measured[index + 1] - measured[index]) / (high - low)
    return measured[index] + slope * (payload_kb - low)


def _setting_bytes(name: str) -> int:
    """A size setting of the embedded server (``'2GB'``) in bytes."""
    number, unit = re.fullmatch(r"'?(\d+)\s*([KMGT]B)'?", SERVER_SETTINGS[name]).groups()
    return int(number) * 1024 ** ("KMGT".index(unit[0]) + 1)


def checkpoint_wal_bytes() -> int:
    """The WAL the embedded server keeps while its slot keeps up: max_wal_size, after which
    a checkpoint lets it recycle the segments."""
    return _setting_bytes("max_wal_size")


def wal_ceiling_bytes() -> int:
    """The most WAL the embedded server keeps: max_wal_size between checkpoints, plus what a
    lagging slot may hold back (max_slot_wal_keep_size; past it the slot is given up)."""
    return checkpoint_wal_bytes() + _setting_bytes("max_slot_wal_keep_size")


def postgres_need(records: int, payload_kb: float, data_dir: Path, wal_cap: int) -> DiskNeed:
    """The embedded PostgreSQL's TaskRun table and the WAL it keeps, at most ``wal_cap``."""
    table = records * per_record_bytes(POSTGRES_TABLE_BYTES, payload_kb)
    wal = min(records * per_record_bytes(POSTGRES_WAL_BYTES, payload_kb), wal_cap)
    return DiskNeed(
        "the embedded PostgreSQL's data",
        data_dir,
        round(table + wal),
        f"TaskRun table {format_bytes(table)} + WAL {format_bytes(wal)}",
    )


def clickhouse_need(records: int, payload_kb: float, folder: Path) -> DiskNeed:
    """The embedded ClickHouse's tables (``task_runs_v2`` and the payloads)."""
    return DiskNeed(
        "the embedded ClickHouse",
        folder,
        round(records * per_record_bytes(CLICKHOUSE_BYTES, payload_kb)),
    )


def run_records(config: RunConfig) -> int:
    """Records the producers are asked to write: Σ phases target_throughput × duration_s."""
    return round(sum(p.target_throughput * p.duration_s for p in config.phases))


def run_needs(config: RunConfig) -> list[DiskNeed]:
    """What the run of ``config`` will write on this machine, store by store."""
    records, payload_kb = run_records(config), config.producer.payload_size_kb
    needs = []
    if config.postgres.database_url is None:
        # the consumer acknowledges as it goes, so checkpoints recycle the WAL; a slot that
        # lags far behind keeps more (up to wal_ceiling_bytes), which the warning covers
        data_dir = EmbeddedPostgres().data_dir
        needs.append(postgres_need(records, payload_kb, data_dir, checkpoint_wal_bytes()))
    if config.clickhouse.sink == "chdb":
        # the run folder is <results_dir>/<date>/<time>-<name>: it is not made yet
        results_dir = Path(config.output.results_dir).expanduser().absolute()
        needs.append(clickhouse_need(records, payload_kb, results_dir))
    return needs


def check_run_disk_space(config: RunConfig) -> None:
    """Refuse (RunError) a run whose writes would not fit on disk; warn when they come close.

    Call it before anything is created, started or truncated.
    """
    if not config.output.check_disk_space:
        return
    check_disk_space(
        run_needs(config),
        f"{run_records(config):,} records (Σ phases target_throughput × duration_s) with "
        f"payload_size_kb = {config.producer.payload_size_kb:g}",
        "shorten or slow the phases (or lower producer.payload_size_kb), point RRLAB_HOME "
        "or --output at a larger disk",
    )


def check_disk_space(needs: Iterable[DiskNeed], drivers: str, shrink: str) -> None:
    """Compare ``needs`` with the free space of their filesystems (stores sharing one are
    added up): RunError when one does not fit with the margin, a warning when one takes over
    half. ``drivers`` says what drives the estimate, ``shrink`` how to make it smaller."""
    for group in _by_filesystem(needs):
        total = sum(need.bytes for need in group)
        free = shutil.disk_usage(existing_ancestor(group[0].path)).free
        if total * (1 + MARGIN) > free:
            raise RunError(
                f"Not enough free disk space: {_describe(group, free)}; this needs about "
                f"{format_bytes(total)} (plus a {MARGIN:.0%} margin) for {drivers}. Free space "
                f"there, {shrink}, or skip this check with --set {SKIP_SETTING}=false."
            )
        if total > free * WARN_SHARE:
            log.warning(
                "disk space is tight: %s; this needs about %s for %s.",
                _describe(group, free), format_bytes(total), drivers,
            )  # fmt: skip


def _describe(group: list[DiskNeed], free: int) -> str:
    stores = " and ".join(
        f"{need.path} ({need.what}: {format_bytes(need.bytes)}"
        + (f", {need.detail})" if need.detail else ")")
        for need in group
    )
    where = "are on one filesystem with" if len(group) > 1 else "is on a filesystem with"
    return f"{stores} {where} {format_bytes(free)} free"


def _by_filesystem(needs: Iterable[DiskNeed]) -> list[list[DiskNeed]]:
    groups: dict[int, list[DiskNeed]] = {}
    for need in needs:
        if need.bytes > 0:
            groups.setdefault(device_of(need.path), []).append(need)
    return list(groups.values())


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent: where a folder not made yet will live."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def device_of(path: Path) -> int:
    """The filesystem (device number) that holds ``path``, made or not."""
    return os.stat(existing_ancestor(path)).st_dev


def format_bytes(count: float) -> str:
    """``1.2 GB``: decimal units, as df -H and most disk tools show them."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
