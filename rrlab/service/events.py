"""The values that flow through the service: decoded changes and their transactions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["insert", "update", "delete"]

# Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
PG_EPOCH_OFFSET_US = 946_684_800_000_000
_LOW_56_BITS = (1 << 56) - 1


@dataclass(slots=True)
class ChangeEvent:
    """One row change of TaskRun.

    ``run`` maps TaskRun column names (``id``, ``createdAt``, ...) to typed values:
    str, int, float, bool, None, ``datetime`` (timezone-aware UTC), lists for arrays,
    dicts/lists for json(b). For an insert or update it is the new row; for a delete,
    the old row (REPLICA IDENTITY FULL).
    """

    kind: EventKind
    run: dict[str, Any]
    version: int


@dataclass(slots=True)
class Transaction:
    """Events of one PostgreSQL transaction, from Begin to Commit."""

    xid: int
    commit_lsn: int
    commit_time_us: int = 0
    commit_end_lsn: int = 0
    events: list[ChangeEvent] = field(default_factory=list)


def version_from_lsn(commit_end_lsn: int, origin_generation: int = 0) -> int:
    """``_version``: the commit end LSN masked to 56 bits, the origin generation on top."""
    return (commit_end_lsn & _LOW_56_BITS) | ((origin_generation & 0xFF) << 56)


def lsn_to_int(lsn: str) -> int:
    """'16/B374D848' → integer."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_to_str(lsn: int) -> str:
    """integer → '16/B374D848'."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def commit_time_ms(commit_time_us: int) -> float:
    """PostgreSQL commit timestamp (µs since 2000-01-01) → Unix epoch milliseconds."""
    return (commit_time_us + PG_EPOCH_OFFSET_US) / 1000
