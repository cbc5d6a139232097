"""The consumer's glibc malloc tuning: blocks below 32 MiB come from one heap for all
threads, and the free heap it keeps goes back to the kernel when the consumer releases it."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's mallopt"
)


def run_probe(code: str, argument: str) -> str:
    """What ``code`` prints in a fresh interpreter (glibc's thresholds at their defaults)."""
    probe = [sys.executable, "-c", code, argument]
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


# The probes below measure resident memory with this.
RESIDENT_MIB = """
def resident_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20
"""

# In a fresh interpreter (thresholds at glibc's defaults; freeing an mmapped block raises
# them, so one probe per process), how many blocks are mmapped while a 24 MiB bytes object
# is alive (mallinfo2.hblks), with the consumer's tuning if argv[1] says so.
PROBE = """
import ctypes, sys
from rrlab.service.consumer import _tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2

def mmapped_while_alive():
    before = mallinfo2().hblks
    block = bytes(24 << 20)
    return mallinfo2().hblks - before

if sys.argv[1] == "tuned":
    _tune_malloc()
print(mmapped_while_alive())
"""


def test_after_tuning_a_flush_sized_block_comes_from_the_heap() -> None:
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("mallinfo2 needs glibc 2.33")

    assert (run_probe(PROBE, "default"), run_probe(PROBE, "tuned")) == ("1", "0")


# How many MiB of resident memory releasing the free heap gave back, in a fresh interpreter
# whose tuned heap holds 80 MiB of freed 1 MiB blocks between live ones (argv[1] "keep"
# measures the same without releasing).
RELEASE_PROBE = (
    RESIDENT_MIB
    + """
import sys
from rrlab.service.consumer import _release_free_heap, _tune_malloc

_tune_malloc()
blocks = [b"x" * (1 << 20) for _ in range(160)]
del blocks[::2]
before = resident_mib()
if sys.argv[1] == "release":
    _release_free_heap()
print(round(before - resident_mib()))
"""
)


def test_releasing_returns_the_kept_free_heap_to_the_kernel() -> None:
    assert int(run_probe(RELEASE_PROBE, "keep")) < 8  # the tuning keeps the holes resident
    assert int(run_probe(RELEASE_PROBE, "release")) >= 72


# How many MiB releasing gave back after a thread (a flush worker) allocated and freed 40 MiB,
# with the consumer's tuning or with only its thresholds (argv[1] "thresholds only").
THREAD_PROBE = (
    RESIDENT_MIB
    + """
import sys, threading
from rrlab.service import consumer

if sys.argv[1] == "tuned":
    consumer._tune_malloc()
else:
    consumer._mallopt(consumer._M_TRIM_THRESHOLD, consumer.MALLOC_TRIM_BYTES)
    consumer._mallopt(consumer._M_MMAP_THRESHOLD, consumer.MALLOC_MMAP_BYTES)

def flush_like():
    blocks = [b"x" * (1 << 20) for _ in range(40)]
    del blocks

worker = threading.Thread(target=flush_like)
worker.start()
worker.join()
before = resident_mib()
consumer._release_free_heap()
print(round(before - resident_mib()))
"""
)


def test_what_flush_threads_freed_is_released_too() -> None:
    # in its own arena, the thread's freed top stays resident (up to the trim threshold)
    assert int(run_probe(THREAD_PROBE, "thresholds only")) < 8
    assert int(run_probe(THREAD_PROBE, "tuned")) >= 36
