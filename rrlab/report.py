"""The HTML report of a run (notebooks/run.ipynb executed on the run folder) and of the saved
drain benchmark results (notebooks/drain.ipynb), each exported to one self-contained file
(plotly.js embedded once, no CDN, opens offline)."""

from __future__ import annotations

from pathlib import Path

from rrlab.analysis.drains import load_drains
from rrlab.analysis.load import load_run
from rrlab.exceptions import ResultsError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
RUN_NOTEBOOK = NOTEBOOKS / "run.ipynb"
DRAIN_NOTEBOOK = NOTEBOOKS / "drain.ipynb"
KERNEL = "python3"

# nbconvert's lab template with the blocks that load require.js, MathJax and Mermaid from CDNs
# removed: a report must open offline, and require.js would capture plotly.js as an AMD module.
OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def render_report(
    run_dir: str | Path, *, show_code: bool = False, notebook: Path = RUN_NOTEBOOK
) -> Path:
    """Execute ``notebook`` on the run at ``run_dir`` into ``run.ipynb`` beside it, then write
    ``report.html``; returns the report's path. Code cells are hidden unless ``show_code``."""
    run = load_run(run_dir)
    executed = execute_notebook(notebook, run.path / "run.ipynb", {"run_dir": str(run.path)})
    html = export_html(executed, title=f"rrlab · {run.label}", show_code=show_code)
    return _write(run.path / "report.html", html)


def render_drain_report(
    results_dir: str | Path = "results", *, latest: int = 6, show_code: bool = False
) -> Path:
    """Execute notebooks/drain.ipynb on the ``latest`` drain results saved under
    ``results_dir`` into ``bench/drain.ipynb``, then write ``bench/drain-report.html``;
    returns the report's path."""
    bench = Path(results_dir).expanduser().absolute() / "bench"
    load_drains(bench.parent, latest=latest)  # no saved results: the loader's error, first
    parameters = {"results_dir": str(bench.parent), "latest": latest}
    executed = execute_notebook(DRAIN_NOTEBOOK, bench / "drain.ipynb", parameters)
    html = export_html(executed, title="rrlab · drain benchmark", show_code=show_code)
    return _write(bench / "drain-report.html", html)


def _write(report: Path, html: str) -> Path:
    try:
        report.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"Cannot write {str(report)!r}: {exc.strerror or exc}.") from None
    return report


def execute_notebook(notebook: Path, output: Path, parameters: dict[str, object]) -> Path:
    """papermill with rrlab's errors: a missing notebook or kernel, or a failing cell."""
    import papermill
    from jupyter_client.kernelspec import NoSuchKernel

    if not notebook.is_file():
        raise ResultsError(
            f"The notebook {str(notebook)!r} is missing; reports need rrlab's notebooks/ folder "
            "(install rrlab from its source checkout: pip install -e .)."
        )
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            kernel_name=KERNEL,
            progress_bar=False,
            log_output=False,
        )
    except NoSuchKernel:
        raise ResultsError(
            f"No Jupyter kernel named {KERNEL!r}. Install one for this Python with: "
            "python -m ipykernel install --sys-prefix"
        ) from None
    except papermill.PapermillExecutionError as exc:
        raise ResultsError(
            f"The notebook failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}. "
            f"The partly executed notebook is {str(output)!r}."
        ) from None
    return output


def export_html(notebook: Path, *, title: str, show_code: bool = False) -> str:
    """One self-contained HTML page from an executed notebook."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        extra_loaders=[DictLoader({"rrlab_offline.html.j2": OFFLINE_TEMPLATE})],
        template_file="rrlab_offline.html.j2",
        exclude_input=not show_code,
        exclude_input_prompt=not show_code,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(
        nbformat.read(notebook, as_version=4), resources={"metadata": {"name": title}}
    )
    return body
