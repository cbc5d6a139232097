"""``rrlab bench drain`` on a tiny backlog: the result's shape, and every drain got every row.

Nothing here is timed; the benchmark's speed is measured by running it as its own command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrlab.analysis.drains import load_drains
from rrlab.bench.drain import DrainOptions, drain_bench
from rrlab.cli.main import main
from rrlab.exceptions import ConfigError


def test_drain_bench_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "drain",
            "--inserts",
            "1600",
            "--update-ratio",
            "0.25",
            "--deletes",
            "100",
            "--payload-kb",
            "0.5",
            "--rounds",
            "1",
            "--json",
            "--output",
            str(tmp_path),
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == result["inserts"] + result["updates"] + result["deletes"]
    assert result["deletes"] == 100
    assert result["updates"] > 0
    for variant in ("pg_recvlogical", "mock", "chdb"):
        assert result[f"{variant}_rows_per_s"] > 0
    for ratio in ("ratio_mock", "ratio_chdb"):
        assert set(result[ratio]) == {"median", "min", "max"}
        assert result[ratio]["min"] <= result[ratio]["median"] <= result[ratio]["max"]
    drains = result["drains"]
    assert [d["variant"] for d in drains] == ["pg_recvlogical", "mock", "chdb"]
    assert all(d["received_rows"] == result["rows"] for d in drains)
    # the consumers flushed a row per surviving event (dedup keeps one per kind and run id)
    assert all(0 < d["rows_flushed"] <= result["rows"] for d in drains[1:])
    assert result["all_rows_received"] is True
    assert all(d["cpu_s"] > 0 for d in drains)
    assert drains[2]["clickhouse_cpu_s"] > 0
    saved = Path(result["saved_to"])
    assert saved.parent == tmp_path / "bench" and saved.name.endswith("-drain.json")
    assert json.loads(saved.read_text())["rows"] == result["rows"]
    drains = load_drains(tmp_path)  # as the drain notebook reads it
    assert drains["variant"].to_list() == ["pg_recvlogical", "mock", "chdb"]
    ratios = dict(zip(drains["variant"], drains["ratio"], strict=True))
    assert ratios["chdb"] == pytest.approx(result["ratio_chdb"]["median"], abs=1e-3)
    assert drains["cpu_us_per_row"].to_list() == pytest.approx(
        [d["cpu_s"] * 1e6 / result["rows"] for d in result["drains"]]
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (DrainOptions(inserts=0), "--inserts"),
        (DrainOptions(deletes=5, inserts=2), "--deletes"),
        (DrainOptions(rounds=0), "--rounds"),
        (DrainOptions(overrides={"consumer.flush_batch_size": 0}), "flush_batch_size"),
    ],
)
def test_bad_options_fail_before_anything_starts(options: DrainOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        drain_bench(options)
