"""glibc malloc tuning for the consumer: fewer arenas, so its RSS stops creeping upward.

Every thread that calls malloc gets an arena of its own, up to 8 per core, and the
consumer runs up to ``max_flush_concurrency`` flush threads. Python holds the GIL while it
allocates, so extra arenas buy no parallelism; they only keep freed memory scattered. In
a 5-minute phase at 10,000 records/s (mock sink) the consumer's RSS grew 11 % with glibc's
default and 3 % with two arenas, at the same CPU (BENCHMARKS.md, section 3).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # from glibc's <malloc.h>
CONSUMER_ARENAS = 2


def limit_malloc_arenas(arenas: int = CONSUMER_ARENAS) -> bool:
    """Cap glibc's malloc arenas, unless MALLOC_ARENA_MAX already says how many.

    Call before the threads start: arenas already made stay. Returns whether the cap is
    in force (False on a C library without glibc's ``mallopt``, e.g. musl or macOS).
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None)
    if mallopt is None or not mallopt(M_ARENA_MAX, arenas):
        log.debug("mallopt(M_ARENA_MAX) unavailable; keeping the C library's arenas")
        return False
    return True
