"""py-spy sampling of the running process into a flame graph SVG, or a clear word why not.

The profiled process starts ``py-spy record --pid <itself>`` as a child. py-spy reads the
process's memory with ptrace, which the kernel may forbid (Yama ``ptrace_scope``, a
container without CAP_SYS_PTRACE); then the reason is written to the log and next to
where the SVG would have been, and the process carries on unprofiled.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

FLAME_SUFFIX = ".flame.svg"
ERROR_SUFFIX = ".flame-error.txt"
SAMPLE_RATE_HZ = 100
STOP_TIMEOUT_S = 30.0
YAMA_PTRACE_SCOPE = Path("/proc/sys/kernel/yama/ptrace_scope")
CAP_SYS_PTRACE = 19
PR_SET_PTRACER = 0x59616D61
PR_SET_PTRACER_ANY = ctypes.c_ulong(-1).value
FIX = (
    "To get flame graphs, allow ptrace: run as root with CAP_SYS_PTRACE (docker run "
    "--cap-add SYS_PTRACE) or lower kernel.yama.ptrace_scope "
    "(sudo sysctl kernel.yama.ptrace_scope=1)."
)


def error_path(svg: Path) -> Path:
    """Where the reason is written when no flame graph could be recorded."""
    return svg.with_name(svg.name.removesuffix(FLAME_SUFFIX) + ERROR_SUFFIX)


def py_spy_executable() -> str | None:
    """py-spy next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def ptrace_obstacle(scope_file: Path = YAMA_PTRACE_SCOPE) -> str | None:
    """Why this process cannot be ptraced by its own child, or None when it can."""
    try:
        scope = int(scope_file.read_text())
    except (OSError, ValueError):
        return None  # no Yama: the classic rule, same user may attach
    if scope >= 3:
        return "kernel.yama.ptrace_scope is 3: ptrace is disabled on this machine until reboot."
    if scope == 2 and not _has_capability(CAP_SYS_PTRACE):
        return "kernel.yama.ptrace_scope is 2: only processes with CAP_SYS_PTRACE may attach."
    return None  # scope 1: allowed once this process names its tracer (see record_self)


def _has_capability(bit: int) -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:
        pass
    return False


def record_self(svg: Path) -> subprocess.Popen | None:
    """Start py-spy on this process, writing ``svg`` when the process exits.

    Returns the py-spy process, or None (after saying why) when it cannot run.
    """
    executable = py_spy_executable()
    obstacle = ptrace_obstacle()
    if executable is None:
        obstacle = "py-spy is not installed (pip install py-spy)."
    if obstacle:
        _explain(svg, obstacle)
        return None
    # Yama scope 1 lets only ancestors attach; py-spy is our child, so name it allowed
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0)
    log_path = svg.with_name(svg.name + ".py-spy.log")
    with open(log_path, "wb") as log:
        command = [
            *(executable, "record", "--pid", str(os.getpid()), "--rate", str(SAMPLE_RATE_HZ)),
            *("--threads", "--format", "flamegraph", "-o", str(svg)),
        ]
        py_spy = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    threading.Thread(target=_watch, args=(py_spy, svg, log_path), daemon=True).start()
    atexit.register(_stop, py_spy)
    return py_spy


def _watch(py_spy: subprocess.Popen, svg: Path, log_path: Path) -> None:
    """py-spy ends before us only when it failed (attach refused, unsupported Python)."""
    if py_spy.wait() != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        _explain(svg, f"py-spy could not sample this process: {' '.join(tail)}")


def _stop(py_spy: subprocess.Popen) -> None:
    """At exit: py-spy writes the SVG on SIGINT."""
    if py_spy.poll() is None:
        py_spy.send_signal(signal.SIGINT)
    try:
        py_spy.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        py_spy.kill()


def _explain(svg: Path, reason: str) -> None:
    message = f"No flame graph: {reason} {FIX} The run goes on without it."
    print(f"rrlab flame: {message}", file=sys.stderr, flush=True)
    error_path(svg).write_text(message + "\n", encoding="utf-8")
