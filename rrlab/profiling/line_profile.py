"""line-profiler on a child process's hot functions: the start-up hook, and the .lprof as polars.

The runner asks for it through the environment (``RRLAB_LINE_PROFILE`` = the .lprof path,
``RRLAB_LINE_TARGETS`` = extra ``module:function`` targets, comma-separated); the process
calls :func:`install_from_environment` first thing in ``main()``. Targets are replaced in
place by profiling wrappers, wherever a module bound them (``from x import f``), so the
profiler switches on in whichever thread calls them (flushes run in worker threads).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import signal
import sys
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rrlab.exceptions import ConfigError

log = logging.getLogger(__name__)

LINE_PROFILE_ENV = "RRLAB_LINE_PROFILE"
LINE_TARGETS_ENV = "RRLAB_LINE_TARGETS"
STATS_SUFFIX = ".lprof"

# The consumer's hot path, in the order a change travels. Tuples are decoded and rows built
# in C (rrlab/replication/_tuples.c; transform's task_run_row and payload_row,
# rrlab/service/_task_row.c), which line-profiler cannot see into.
CONSUMER_TARGETS = (
    "rrlab.service.consumer:Consumer._handle",
    "rrlab.replication.pgoutput:decode_message",
    "rrlab.replication.pgoutput:read_tuple",
    "rrlab.service.transactions:TransactionAssembler.change",
    "rrlab.service.transactions:TransactionAssembler.commit",
    "rrlab.service.scheduler:FlushScheduler.add_transaction",
    "rrlab.service.scheduler:FlushScheduler._arrived",
    "rrlab.service.flusher:Flusher.build",
    "rrlab.service.scheduler:FlushScheduler._add",
    "rrlab.service.flusher:Flusher.prepare",
    "rrlab.service.flusher:Flusher.send",
    "rrlab.service.sinks:encode_row",
)
PRODUCER_TARGETS = (
    "rrlab.producer.generator:RunGenerator.new_run",
    "rrlab.producer.generator:RunGenerator.transition",
    "rrlab.producer.generator:RunGenerator._payload",
    "rrlab.producer.writer:RunWriter.write_batch",
    "rrlab.producer.writer:RunWriter._insert",
    "rrlab.producer.writer:RunWriter._update",
)


def profile_environment(stats_path: Path, targets: Sequence[str]) -> dict[str, str]:
    """The environment that makes :func:`install_from_environment` profile ``targets``."""
    return {LINE_PROFILE_ENV: str(stats_path), LINE_TARGETS_ENV: ",".join(targets)}


def install_from_environment(defaults: Sequence[str] = CONSUMER_TARGETS) -> Any | None:
    """Profile ``defaults`` and the requested targets if the runner asked; returns the profiler.

    Does nothing (and costs one environment lookup) when ``RRLAB_LINE_PROFILE`` is unset.
    Statistics are written at exit, including an exit caused by SIGTERM.
    """
    # taken out of the environment so that a Python child of ours does not profile too
    stats_path = os.environ.pop(LINE_PROFILE_ENV, None)
    targets = os.environ.pop(LINE_TARGETS_ENV, "")
    if not stats_path:
        return None
    extra = [t for t in targets.split(",") if t]
    return install(Path(stats_path), defaults, extra)


def install(stats_path: Path, defaults: Iterable[str], extra: Iterable[str] = ()) -> Any:
    """Wrap ``defaults`` (skipped with a warning when absent) and ``extra`` (must exist)."""
    from line_profiler import LineProfiler

    profiler = LineProfiler()
    defaults = tuple(defaults)
    for spec in defaults:
        try:
            _profile_target(profiler, spec)
        except ConfigError as exc:
            log.warning("line profile: default target skipped: %s", exc)
    for spec in dict.fromkeys(extra):
        if spec not in defaults:  # wrapping twice would count every line twice
            _profile_target(profiler, spec)
    atexit.register(_dump, profiler, stats_path)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # without a handler SIGTERM ends the process before atexit; exit normally instead
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return profiler


def check_targets(targets: Iterable[str]) -> None:
    """Raise ConfigError now (in the runner) for a target the profiled process could not find."""
    for spec in targets:
        _resolve(spec)


def _dump(profiler: Any, stats_path: Path) -> None:
    partial = stats_path.with_name(stats_path.name + ".partial")
    profiler.dump_stats(partial)
    partial.replace(stats_path)  # a reader never sees a half-written file


def _resolve(spec: str) -> tuple[Any, str, Any]:
    """``module:function`` or ``module:Class.method`` → (owner, attribute, raw attribute)."""
    module_name, _, qualname = spec.partition(":")
    if not module_name or not qualname:
        raise ConfigError(
            f"Line profile target {spec!r} is not module:function "
            "(e.g. rrlab.service.transform:sort_task_rows)."
        )
    main = sys.modules.get("__main__")
    main_spec = getattr(main, "__spec__", None)
    if main_spec is not None and main_spec.name == module_name:
        owner: Any = main  # run with -m: the module's live copy is __main__
    else:
        try:
            owner = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"Line profile target {spec!r}: cannot import: {exc}") from None
    *path, attribute = qualname.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            raise ConfigError(f"Line profile target {spec!r}: {module_name} has no {part}.")
    raw = owner.__dict__.get(attribute) if isinstance(owner, type) else None
    raw = raw if raw is not None else getattr(owner, attribute, None)
    if not isinstance(raw, types.FunctionType | staticmethod | classmethod):
        raise ConfigError(
            f"Line profile target {spec!r} is not a Python function in {module_name} "
            "(C functions and other objects cannot be line-profiled)."
        )
    return owner, attribute, raw


def _profile_target(profiler: Any, spec: str) -> None:
    owner, attribute, raw = _resolve(spec)
    profiler.add_callable(raw)
    wrapped = profiler.wrap_callable(raw)
    setattr(owner, attribute, wrapped)
    if isinstance(raw, types.FunctionType):
        _rebind(raw, wrapped)


def _rebind(function: types.FunctionType, wrapped: Any) -> None:
    """Point every module-level ``from x import f`` binding of ``function`` at the wrapper."""
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not namespace:
            continue
        for name, value in list(namespace.items()):
            if value is function:
                namespace[name] = wrapped
