"""Profiling: memray, line-profiler and py-spy around a stand-in program and the real consumer."""

from __future__ import annotations

import inspect
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

import rrlab
from rrlab.analysis import plots
from rrlab.analysis.profiles import (
    flame_graphs,
    line_profile_frame,
    memray_flamegraphs,
    memray_frames,
)
from rrlab.config import ProfilingConfig
from rrlab.exceptions import ConfigError, ResultsError
from rrlab.profiling import flame
from rrlab.profiling.line_profile import (
    CONSUMER_TARGETS,
    PRODUCER_TARGETS,
    check_targets,
    install,
)
from rrlab.profiling.line_stats import stats_frame
from rrlab.profiling.wrappers import finish_profiles, wrapper_for
from rrlab.runner.processes import python_module_command
from rrlab.service import consumer
from tests.fixtures.profiled_app import HOT_TARGETS

REPO = Path(__file__).resolve().parent.parent
APP = "tests.fixtures.profiled_app"
STARTUP_TIMEOUT_S = 60.0


def _wait_for(predicate, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not predicate():
        assert process.poll() is None, f"the stand-in exited early while waiting for {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def _profiled_app(
    run_dir: Path,
    profiling: ProfilingConfig,
    *app_args: str,
    settle=None,
    attempt: int = 0,
    stop_signal: int = signal.SIGTERM,
) -> int:
    """Start the stand-in under ``profiling`` (as the runner starts the consumer), let it work,
    send it ``stop_signal``; returns its exit status."""
    ready = run_dir / f"ready-{attempt}"
    command = python_module_command(
        APP, [str(ready), *app_args], wrapper_for(profiling, run_dir, attempt)
    )
    with open(run_dir / "app.log", "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(ready.exists, "the stand-in to start working", process)
        if settle is not None:
            _wait_for(settle, "the profiler to start", process)
        time.sleep(0.5)  # some work to profile; no assertion depends on how much
        process.send_signal(stop_signal)
        return process.wait(timeout=STARTUP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- wrapper argv -------------------------------------------------------------------------


def test_wrapper_for_each_mode(tmp_path) -> None:
    assert wrapper_for(ProfilingConfig(mode="none"), tmp_path, 0) is None
    capture = str(tmp_path / "profiles" / "consumer-2.memray.bin")
    assert wrapper_for(ProfilingConfig(mode="memray"), tmp_path, 2) == [
        "memray", "run", "--quiet", "--output", capture,
    ]  # fmt: skip
    native = wrapper_for(ProfilingConfig(mode="memray", memray_native=True), tmp_path, 0)
    assert "--native" in native
    lines = wrapper_for(
        ProfilingConfig(mode="lines", line_targets=["rrlab.service.transform:epoch_ms"]),
        tmp_path,
        1,
    )
    assert lines[0] == "rrlab.profiling.launch"
    assert lines[1:] == [
        "--line-profile", str(tmp_path / "profiles" / "consumer-1.lprof"),
        "--line-target", "rrlab.service.transform:epoch_ms",
    ]  # fmt: skip
    both = wrapper_for(ProfilingConfig(mode="both"), tmp_path, 0)
    assert both[both.index("-m") + 1 :][:2] == ["memray", "run"] and "--line-profile" in both
    assert "--flame" in wrapper_for(ProfilingConfig(mode="flame"), tmp_path, 0)


def test_profile_producer_moves_the_profiler_off_the_consumer(tmp_path) -> None:
    profiling = ProfilingConfig(mode="memray", profile_producer=True)
    assert wrapper_for(profiling, tmp_path, 0) is None
    producer = wrapper_for(profiling, tmp_path, 0, process="producer-0")
    assert producer[-1].endswith("producer-0-0.memray.bin")


def test_bad_line_targets_are_refused_in_the_runner(tmp_path) -> None:
    for target, problem in (
        ("rrlab.nowhere:f", "cannot import"),
        ("rrlab.service.transform:no_such_function", "not a Python function"),
        ("rrlab.service.transform:NoClass.method", "has no NoClass"),
        ("rrlab.replication.values:ADAPTERS", "not a Python function"),
    ):
        with pytest.raises(ConfigError, match=problem):
            wrapper_for(ProfilingConfig(mode="lines", line_targets=[target]), tmp_path, 0)


def test_default_line_targets_exist() -> None:
    check_targets(CONSUMER_TARGETS)
    check_targets(PRODUCER_TARGETS)


def test_targets_are_replaced_where_other_modules_imported_them(tmp_path, monkeypatch) -> None:
    (tmp_path / "lp_lib.py").write_text(
        "def work(n):\n    total = 0\n    for i in range(n):\n"
        "        total += i\n    return total\n"
    )
    (tmp_path / "lp_user.py").write_text(
        "from lp_lib import work\n\ndef use():\n    return work(1000)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        import lp_user

        profiler = install(tmp_path / "lp.lprof", (), ["lp_lib:work"])
    finally:
        signal.signal(signal.SIGTERM, previous)  # pytest's own SIGTERM handling stays
    assert lp_user.use() == 499500
    profiler.dump_stats(tmp_path / "lp.lprof")
    loop = stats_frame(tmp_path / "lp.lprof").filter(pl.col("source").str.contains("total \\+= i"))
    assert loop["hits"].item() == 1000 and loop["function"].item() == "work"


# --- stand-in program ------------------------------------------------------------------------


def test_memray_capture_of_a_stand_in(tmp_path) -> None:
    assert _profiled_app(tmp_path, ProfilingConfig(mode="memray")) == 0
    (capture,) = (tmp_path / "profiles").glob("*.memray.bin")
    readable = subprocess.run([sys.executable, "-m", "memray", "summary", str(capture)])
    assert readable.returncode == 0
    frames = memray_frames(tmp_path)
    assert frames["heap"].height > 0 and frames["heap"]["rss_mb"].max() > 0
    assert frames["heap"]["heap_mb"].max() > 0
    for ranking in ("top_by_bytes", "top_by_count"):
        assert frames[ranking].height > 0
        assert set(frames[ranking]["process"]) == {"consumer"}
    # the 4 KB JSON documents are the bulk of what the stand-in allocates
    stacks = frames["at_peak"].filter(pl.col("stack").str.contains("encode_batch"))
    assert stacks.height > 0
    (summary,) = frames["summary"].iter_rows(named=True)
    assert summary["peak_memory_mb"] > 0 and summary["total_allocations"] > 0
    assert summary["still_allocated_at_exit_mb"] > 0 and not summary["native_frames"]
    (html,) = finish_profiles(tmp_path)
    assert html.name == "consumer-0.memray-flamegraph.html"
    page = html.read_text()
    assert "encode_batch" in page and "cdn.jsdelivr" not in page  # opens offline
    assert memray_flamegraphs(tmp_path)["html"].to_list() == [str(html)]
    assert plots.heap(frames["heap"]).data
    assert plots.allocation_sites(frames["top_by_count"], "allocations").data


def test_a_killed_consumers_capture_stays_beside_its_restart(tmp_path, caplog) -> None:
    profiling = ProfilingConfig(mode="memray")
    assert _profiled_app(tmp_path, profiling, stop_signal=signal.SIGKILL) == -signal.SIGKILL
    assert _profiled_app(tmp_path, profiling, attempt=1) == 0
    summary = memray_frames(tmp_path)["summary"].sort("attempt")
    assert summary["attempt"].to_list() == [0, 1]
    assert summary["duration_s"].min() > 0
    (tmp_path / "profiles" / "consumer-2.memray.bin").write_bytes(b"not a capture")
    assert memray_frames(tmp_path)["summary"].height == 2
    assert "consumer-2.memray.bin" in caplog.text


def test_memray_and_line_profiler_share_one_run(tmp_path) -> None:
    profiling = ProfilingConfig(mode="both", line_targets=list(HOT_TARGETS))
    assert _profiled_app(tmp_path, profiling) == 0
    assert memray_frames(tmp_path)["heap"].height > 0
    lines = line_profile_frame(tmp_path)
    assert set(lines["function"]) == {"encode_batch", "Keeper.keep"}
    hottest = lines.row(0, named=True)
    assert hottest["function"] == "encode_batch"
    assert "json.dumps" in hottest["source"] or "4096" in hottest["source"]
    per_function = lines.group_by("function").agg(pl.col("percent_of_function").sum())
    assert per_function["percent_of_function"].round(3).to_list() == [100.0, 100.0]
    assert plots.hot_lines(lines).data


def test_line_profile_counts_calls_from_other_threads(tmp_path) -> None:
    profiling = ProfilingConfig(mode="lines", line_targets=list(HOT_TARGETS))
    assert _profiled_app(tmp_path, profiling) == 0
    lines = line_profile_frame(tmp_path)
    calls = lines.filter(
        (pl.col("function") == "encode_batch") & pl.col("source").str.contains("rows = \\[\\]")
    )["hits"].item()
    keeps = lines.filter(
        (pl.col("function") == "Keeper.keep") & pl.col("source").str.contains("if len")
    )["hits"].item()
    # every round calls encode_batch once in the main loop and once in a worker thread
    assert calls >= 2 * keeps - 1


def test_line_profile_is_written_when_sigterm_has_no_handler(tmp_path) -> None:
    profiling = ProfilingConfig(mode="lines", line_targets=list(HOT_TARGETS))
    assert _profiled_app(tmp_path, profiling, "--no-handler") == 128 + signal.SIGTERM
    assert line_profile_frame(tmp_path)["hits"].sum() > 0


def test_flame_graph_or_a_reason(tmp_path) -> None:
    svg = tmp_path / "profiles" / "consumer-0.flame.svg"
    py_spy_log = svg.with_name(svg.name + ".py-spy.log")

    def started() -> bool:
        sampling = py_spy_log.exists() and "Sampling" in py_spy_log.read_text()
        return sampling or flame.error_path(svg).exists()

    assert _profiled_app(tmp_path, ProfilingConfig(mode="flame"), settle=started) == 0
    (graph,) = flame_graphs(tmp_path).iter_rows(named=True)
    if graph["svg"] is not None:
        assert svg.read_text().lstrip().startswith("<?xml") and "encode_batch" in svg.read_text()
    else:
        assert graph["error"].startswith("No flame graph:") and "ptrace" in graph["error"]


def test_flame_explains_a_forbidden_ptrace(tmp_path, monkeypatch) -> None:
    scope = tmp_path / "ptrace_scope"
    scope.write_text("3\n")
    assert "ptrace is disabled" in flame.ptrace_obstacle(scope)
    scope.write_text("1\n")
    assert flame.ptrace_obstacle(scope) is None  # our child may attach once named
    assert flame.ptrace_obstacle(tmp_path / "absent") is None
    monkeypatch.setattr(flame, "ptrace_obstacle", lambda: "kernel.yama.ptrace_scope is 3.")
    svg = tmp_path / "consumer-0.flame.svg"
    assert flame.record_self(svg) is None
    reason = flame.error_path(svg).read_text()
    assert "ptrace_scope is 3" in reason and "CAP_SYS_PTRACE" in reason and not svg.exists()


def test_loaders_say_what_is_missing(tmp_path) -> None:
    with pytest.raises(ResultsError, match="--profile memray"):
        memray_frames(tmp_path)
    with pytest.raises(ResultsError, match="--profile lines"):
        line_profile_frame(tmp_path)
    assert flame_graphs(tmp_path).height == 0


# --- the real consumer -----------------------------------------------------------------------


@pytest.mark.slow
def test_real_consumer_under_memray(pg_server, tmp_path) -> None:
    run_dir = rrlab.run(
        throughput=1000, duration=3, sink="mock", profile="memray", output=str(tmp_path),
        progress=False,
    )  # fmt: skip
    frames = memray_frames(run_dir)
    assert frames["heap"].height > 0
    rrlab_sites = frames["top_by_bytes"].filter(pl.col("file").str.contains("/rrlab/"))
    assert rrlab_sites.height > 0
    assert memray_flamegraphs(run_dir).height == 1


@pytest.mark.slow
@pytest.mark.skipif(
    "install_from_environment" not in inspect.getsource(consumer.main),
    reason="the consumer's main() does not call install_from_environment() yet",
)
def test_real_consumer_hot_lines(pg_server, tmp_path) -> None:
    run_dir = rrlab.run(
        throughput=1000, duration=3, sink="mock", profile="lines", output=str(tmp_path),
        progress=False,
    )  # fmt: skip
    lines = line_profile_frame(run_dir)
    hot_path = {target.split(":")[1].split(".")[-1] for target in CONSUMER_TARGETS}
    top = lines.head(10)["function"].str.split(".").list.last().to_list()
    assert set(top) <= hot_path and lines["hits"].sum() > 1000
