"""The consumer's malloc arena cap, observed through glibc's own per-arena statistics."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

# Threads that each malloc a large block; glibc then prints one "Arena N:" block per arena.
PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, sys, threading
    from rrlab.service.allocator import limit_malloc_arenas
    if sys.argv[1] == "limit":
        assert limit_malloc_arenas(2)
    held, together = [], threading.Barrier(6)
    def work():
        together.wait()  # all alive at once, so none inherits an exited thread's arena
        held.append(bytearray(200_000))
        together.wait()
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()
    """
)


def _arenas(mode: str, **env_vars: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_vars
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True
    )
    return len(re.findall(r"^Arena \d+:", done.stderr, re.M))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc statistics")
def test_threads_share_two_arenas_once_limited() -> None:
    assert _arenas("default") > 2  # each new thread got an arena of its own
    assert _arenas("limit") <= 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc statistics")
def test_an_arena_count_the_user_set_is_left_alone() -> None:
    assert _arenas("limit", MALLOC_ARENA_MAX="4") == 4
