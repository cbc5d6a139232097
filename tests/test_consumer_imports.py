"""The consumer process carries only the service: its profiles must not show the workbench."""

import json
import subprocess
import sys

WORKBENCH = ("polars", "pandas", "plotly", "chdb", "papermill", "nbconvert", "memray", "tqdm")


def test_the_consumer_does_not_import_the_workbench() -> None:
    code = (
        "import json, sys, rrlab.service.consumer; "
        f"print(json.dumps([m for m in {WORKBENCH!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


def test_the_clickhouse_sink_does_not_import_the_embedded_server() -> None:
    # the consumer imports rrlab.infra.clickhouse for its client when the sink is ClickHouse;
    # the server module (http.server and ~700 lines) only launches the embedded endpoint
    code = (
        "import sys, rrlab.service.consumer, rrlab.infra.clickhouse; "
        "print('rrlab.infra.chdb_server' in sys.modules, 'http.server' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
