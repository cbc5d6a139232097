"""The consumer's own per-second vitals: main-loop utilisation, CPU % and RSS.

Utilisation is the fraction of wall time the receive loop spent working (decoding,
assembling, scheduling) rather than waiting for input: the counterpart of Node's
event-loop utilisation the seed harness reported. CPU and RSS come from the kernel
(os.times, /proc/self/statm), so measuring them costs next to nothing.
"""

from __future__ import annotations

import os
import time

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_MB
    except OSError:
        return 0.0


class ProcessStats:
    """Accumulates busy time and turns it, with CPU time and RSS, into one sample per call."""

    def __init__(self) -> None:
        self._busy_s = 0.0
        self._since = time.perf_counter()
        self._cpu_since = _cpu_seconds()

    def busy(self, seconds: float) -> None:
        self._busy_s += seconds

    def sample(self) -> dict[str, float]:
        """Utilisation and CPU % since the previous sample, and the current RSS."""
        now, cpu = time.perf_counter(), _cpu_seconds()
        wall = max(now - self._since, 1e-9)
        sample = {
            "utilization": round(min(self._busy_s / wall, 1.0), 4),
            "cpu_percent": round(100 * (cpu - self._cpu_since) / wall, 1),
            "rss_mb": round(rss_mb(), 1),
        }
        self._busy_s, self._since, self._cpu_since = 0.0, now, cpu
        return sample


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system
