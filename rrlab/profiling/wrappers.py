"""Runner-side profiling set-up: which profiler argv wraps which child, and the files after.

:func:`wrapper_for` turns the profiling settings into the argv the runner puts between
``python -m`` and ``-m rrlab.service.consumer``; every file lands in ``RUN_DIR/profiles``,
named ``<process>-<attempt>`` so a restarted consumer never overwrites an earlier capture.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from rrlab.config import ProfilingConfig
from rrlab.exceptions import ResultsError
from rrlab.profiling.flame import FLAME_SUFFIX
from rrlab.profiling.line_profile import STATS_SUFFIX, check_targets
from rrlab.profiling.memray_profile import CAPTURE_SUFFIX, memray_wrapper, write_flamegraph

log = logging.getLogger(__name__)

PROFILES_DIR = "profiles"
LAUNCHER = "rrlab.profiling.launch"
_STEM = re.compile(r"^(?P<process>.+)-(?P<attempt>\d+)$")


def profiles_dir(run_dir: Path) -> Path:
    return Path(run_dir) / PROFILES_DIR


def wrapper_for(
    profiling: ProfilingConfig, run_dir: Path, attempt: int, *, process: str = "consumer"
) -> list[str] | None:
    """The profiler argv for ``process``'s ``attempt``-th start (0 = first), or None.

    The consumer is profiled, or every producer when ``profiling.profile_producer``.

    ``both`` runs memray and line-profiler in one process: the launcher sets up line
    profiling, then runs ``memray run`` in-process (tests/test_profiling.py checks that
    both outputs come out of one run). Bad ``line_targets`` raise ConfigError here, in the
    runner, rather than killing the child at start-up.
    """
    mode = profiling.mode
    if mode == "none" or (process == "consumer") == profiling.profile_producer:
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


def profile_files(run_dir: str | Path, suffix: str) -> list[tuple[str, int, Path]]:
    """(process, attempt, path) of the run's profile files ending in ``suffix``, in start order."""
    directory = profiles_dir(Path(run_dir))
    found = []
    for path in directory.glob(f"*{suffix}") if directory.is_dir() else []:
        match = _STEM.match(path.name.removesuffix(suffix))
        if match:
            found.append((match["process"], int(match["attempt"]), path))
    return sorted(found, key=lambda item: (item[0], item[1]))


def finish_profiles(run_dir: Path) -> list[Path]:
    """After the run: memray's HTML flame graph beside each capture. Returns the HTML files.

    A capture memray cannot read (its process was killed mid-write) is logged and skipped.
    """
    written = []
    for _process, _attempt, capture in profile_files(run_dir, CAPTURE_SUFFIX):
        try:
            written.append(write_flamegraph(capture))
        except ResultsError as exc:
            log.warning("%s", exc)
    return written
