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
