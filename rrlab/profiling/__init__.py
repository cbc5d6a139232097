"""Profiling: memray, line-profiler, py-spy, and the always-on process samplers.

:func:`wrapper_for` turns the profiling settings into the argv the runner puts between
``python -m`` and ``-m rrlab.service.consumer``; every file lands in ``RUN_DIR/profiles``,
named ``<process>-<attempt>`` so a restarted consumer never overwrites an earlier capture.
"""

from __future__ import annotations

from pathlib import Path

from rrlab.config import ProfilingConfig
from rrlab.profiling.flame import FLAME_SUFFIX
from rrlab.profiling.line_profile import STATS_SUFFIX, check_targets
from rrlab.profiling.memray_profile import CAPTURE_SUFFIX, memray_wrapper

PROFILES_DIR = "profiles"
LAUNCHER = "rrlab.profiling.launch"


def profiles_dir(run_dir: Path) -> Path:
    return Path(run_dir) / PROFILES_DIR


def wrapper_for(
    profiling: ProfilingConfig, run_dir: Path, attempt: int, *, process: str = "consumer"
) -> list[str] | None:
    """The profiler argv for ``process``'s ``attempt``-th start (0 = first), or None.

    ``both`` runs memray and line-profiler in one process: the launcher sets up line
    profiling, then runs ``memray run`` in-process (tests/test_profiling.py checks that
    both outputs come out of one run). Bad ``line_targets`` raise ConfigError here, in the
    runner, rather than killing the child at start-up.
    """
    mode = profiling.mode
    if mode == "none":
        return None
    directory = profiles_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{process}-{attempt}"
    memray = (
        memray_wrapper(Path(f"{stem}{CAPTURE_SUFFIX}"), native=profiling.memray_native)
        if mode in ("memray", "both")
        else []
    )
    launch: list[str] = []
    if mode in ("lines", "both"):
        check_targets(profiling.line_targets)
        launch += ["--line-profile", f"{stem}{STATS_SUFFIX}"]
        for target in profiling.line_targets:
            launch += ["--line-target", target]
    if mode == "flame":
        launch += ["--flame", f"{stem}{FLAME_SUFFIX}"]
    if not launch:
        return memray
    return [LAUNCHER, *launch, *(["-m", *memray] if memray else [])]
