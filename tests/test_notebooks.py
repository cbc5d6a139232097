"""The notebooks execute under papermill on fabricated run folders: no errors, figures present."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest

from rrlab.analysis.load import find_runs
from tests.fixtures.fabricated_run import fabricate_run
from tests.fixtures.saved_drains import save_drains

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def execute(name: str, tmp_path: Path, **parameters) -> nbformat.NotebookNode:
    output = tmp_path / f"executed-{name}"
    papermill.execute_notebook(
        str(NOTEBOOKS / name), str(output), parameters=parameters, kernel_name="python3",
        progress_bar=False,
    )  # fmt: skip
    return nbformat.read(output, as_version=4)


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def figures(nb: nbformat.NotebookNode) -> list[dict]:
    """Figure outputs: plotly's JSON for JupyterLab and an HTML div for export."""
    found = [out for out in outputs(nb) if PLOTLY_MIME in out.get("data", {})]
    for out in found:
        assert "plotly-graph-div" in out["data"]["text/html"]
    return found


def texts(nb: nbformat.NotebookNode) -> str:
    return "\n".join(out.get("data", {}).get("text/markdown", "") for out in outputs(nb))


def assert_no_errors(nb: nbformat.NotebookNode) -> None:
    errors = [out for out in outputs(nb) if out.get("output_type") == "error"]
    assert not errors, errors
    assert "Traceback" not in stderr(nb), stderr(nb)


def stderr(nb: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in outputs(nb) if out.get("name") == "stderr")


def test_every_notebook_starts_with_a_parameters_cell():
    for path in NOTEBOOKS.glob("*.ipynb"):
        first_code = next(
            c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
        )
        assert "parameters" in first_code.metadata.get("tags", []), path.name


def test_run_notebook_parameters_cover_every_option():
    nb = nbformat.read(NOTEBOOKS / "run.ipynb", as_version=4)
    source = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source
    for option in ("config", "throughput", "duration", "sink", "profile", "flush_batch_size",
                   "flush_interval_ms", "max_flush_concurrency", "workers", "insert_update_ratio",
                   "payload_size_kb", "run_name", "output", "run_dir",
                   "lag_p99_threshold_ms"):  # fmt: skip
        assert f"\n{option} = " in f"\n{source}", option


def test_run_notebook_renders_an_existing_run(tmp_path):
    run_dir = fabricate_run(tmp_path, consumer_capacity=3000)
    nb = execute("run.ipynb", tmp_path, run_dir=str(run_dir))
    assert_no_errors(nb)
    assert len(figures(nb)) == 5  # throughput, lag, flushes, resources, per-phase summary
    first_html = next(out["data"]["text/html"] for out in outputs(nb) if "data" in out)
    assert "plotly.js v" in first_html[:2000]  # the bundle, embedded once before any figure
    markdown = texts(nb)
    assert str(run_dir) in markdown
    assert "p99 replication lag" in markdown  # the overloaded phase is a finding
    assert "No memray profile in this run" in markdown
    assert "No line-profiler profile in this run" in markdown


def test_compare_notebook_on_two_runs(tmp_path):
    a = fabricate_run(tmp_path, run_name="batch50")
    b = fabricate_run(tmp_path, run_name="batch100", flush_batch_size=100, seed=9)
    nb = execute("compare.ipynb", tmp_path, run_dirs=[str(a), str(b)])
    assert_no_errors(nb)
    tables_and_figures = figures(nb)
    assert len(tables_and_figures) == 6  # settings, deltas, throughput, lag, flushes, resources
    settings = tables_and_figures[0]["data"][PLOTLY_MIME]["data"][0]["cells"]["values"]
    assert "consumer.flush_batch_size" in settings[0]


def test_breaking_point_notebook_on_an_existing_ramp(tmp_path):
    ramp = fabricate_run(
        tmp_path,
        phases=(("r5k", 8, 5000), ("r10k", 8, 10000), ("r15k", 8, 15000)),
        consumer_capacity=12000,
    )
    nb = execute("breaking_point.ipynb", tmp_path, run_dirs=[str(ramp)])
    assert_no_errors(nb)
    assert "Highest sustainable rate: 10,000 records/s" in texts(nb)
    assert len(figures(nb)) == 5


@pytest.mark.parametrize("name", ["run.ipynb", "compare.ipynb", "breaking_point.ipynb"])
def test_notebooks_are_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_run_notebook_shows_a_memray_capture(tmp_path):
    run_dir = fabricate_run(tmp_path)
    capture = run_dir / "profiles" / "consumer-0.memray.bin"
    subprocess.run(
        [sys.executable, "-m", "memray", "run", "--quiet", "--output", str(capture), "-c",
         "blocks = [bytearray(2**20) for _ in range(20)]"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    nb = execute("run.ipynb", tmp_path, run_dir=str(run_dir))
    assert_no_errors(nb)
    titles = [out["data"][PLOTLY_MIME]["layout"]["title"]["text"] for out in figures(nb)]
    for title in ("Heap over time (memray): heap vs RSS (MB)",
                  "Top allocation sites by bytes (memray)",
                  "Top allocation sites by count (memray)",
                  "Still allocated at exit (largest call stacks)"):  # fmt: skip
        assert title in titles
    assert "No memray profile" not in texts(nb)


@pytest.mark.slow
def test_run_notebook_runs_a_real_ci_sized_run(pg_server, tmp_path):
    nb = execute(
        "run.ipynb", tmp_path, config="smoke", sink="mock", output=str(tmp_path / "results"),
        overrides={"phases": [{"name": "warmup", "duration_s": 2, "target_throughput": 500},
                              {"name": "baseline", "duration_s": 3, "target_throughput": 1500}]},
    )  # fmt: skip
    assert_no_errors(nb)
    runs = find_runs(tmp_path / "results")
    assert runs.height == 1 and runs["status"].item() == "complete"
    assert runs["path"].item() in texts(nb)
    assert "baseline @ 1,500/s" in stderr(nb)  # the progress bar of each phase
    assert len(figures(nb)) == 5
    produced = figures(nb)[0]["data"][PLOTLY_MIME]["data"][0]
    assert produced["name"] == "produced" and np.nanmax(array(produced["y"])) > 500


def array(data: list | dict) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array ({dtype, bdata}) as plotly writes numpy."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
    return np.array(data, dtype=float)


def test_drain_notebook_renders_saved_benchmark_results(tmp_path):
    fast = {"pg_recvlogical": [0.02, 0.02, 0.03], "mock": [0.02, 0.025, 0.03], "chdb": [0.05] * 3}
    save_drains(tmp_path / "results", "20261127T070000Z", fast)
    save_drains(tmp_path / "results", "20261127T080000Z", fast, {"consumer.flush_batch_size": 5000})
    nb = execute("drain.ipynb", tmp_path, results_dir=str(tmp_path / "results"))
    assert_no_errors(nb)
    assert len(figures(nb)) == 2  # the ratios and CPU per row, the summary table
    assert "flush_batch_size=5000" in figures(nb)[0]["data"]["text/html"]
