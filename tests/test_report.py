"""rrlab report: a self-contained report.html that opens offline and draws its figures."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from rrlab.cli.main import main
from rrlab.exceptions import ResultsError
from rrlab.report import render_report
from tests.fixtures.fabricated_run import fabricate_run
from tests.fixtures.saved_drains import save_drains

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXTERNAL = re.compile(
    r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//"
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run_dir = fabricate_run(tmp_path_factory.mktemp("results"), consumer_capacity=3000)
    return render_report(run_dir)


def test_report_is_written_into_the_run_folder(report):
    assert report.name == "report.html"
    assert (report.parent / "run.ipynb").is_file()  # the executed notebook, kept beside it
    executed = nbformat.read(report.parent / "run.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


def test_report_embeds_plotly_once_and_loads_nothing_external(report):
    html = report.read_text(encoding="utf-8")
    assert html.count("* plotly.js v") == 1  # the bundle's licence header: embedded exactly once
    assert html.count('class="plotly-graph-div"') == 5
    assert not EXTERNAL.findall(html), EXTERNAL.findall(html)[:3]
    assert "require.js" not in html and "MathJax.js" not in html


def test_report_hides_code_unless_asked(report, tmp_path):
    assert "init_notebook" not in report.read_text(encoding="utf-8")
    shown = render_report(fabricate_run(tmp_path), show_code=True)
    assert "init_notebook" in shown.read_text(encoding="utf-8")


def test_report_size_is_dominated_by_the_plotly_bundle(report):
    # plotly.js is ~4.7 MB; the figures of a short run add little because series are downsampled
    assert report.stat().st_size < 6_000_000


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium binary (installed by .ci/run)")
def test_report_renders_in_a_browser_offline(report, tmp_path):
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
         report.as_uri()],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    # plotly draws each figure into .main-svg elements once plotly.js has run
    assert result.stdout.count('class="main-svg"') >= 5, result.stdout[:2000]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # a clean report logs nothing, least of all errors


def test_cli_report(tmp_path, capsys):
    run_dir = fabricate_run(tmp_path)
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir / "report.html")


def test_cli_report_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_a_failing_notebook_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.ipynb"
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("run_dir = None"), nbformat.v4.new_code_cell("1 / 0")]
    )
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, broken)
    with pytest.raises(ResultsError, match=r"failed in cell .*ZeroDivisionError.*partly executed"):
        render_report(fabricate_run(tmp_path), notebook=broken)


def test_bench_report_renders_the_saved_drain_results_offline(tmp_path, capsys):
    fast = {"pg_recvlogical": [0.02, 0.03], "mock": [0.025, 0.03], "chdb": [0.05, 0.06]}
    save_drains(tmp_path, "20261127T070000Z", fast)
    assert main(["bench", "report", "--output", str(tmp_path)]) == 0
    report = Path(capsys.readouterr().out.strip())
    assert report == tmp_path / "bench" / "drain-report.html"
    assert (report.parent / "drain.ipynb").is_file()  # the executed notebook, beside it
    html = report.read_text(encoding="utf-8")
    assert html.count("* plotly.js v") == 1 and html.count('class="plotly-graph-div"') == 2
    assert not EXTERNAL.findall(html), EXTERNAL.findall(html)[:3]
    assert "init_notebook" not in html  # code hidden


def test_bench_report_without_saved_results_says_how_to_make_them(tmp_path, capsys):
    assert main(["bench", "report", "--output", str(tmp_path)]) == 2
    assert f"rrlab bench drain --output {tmp_path}" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()
