"""``rrlab bench drain``: the consumer's drain speed against ``pg_recvlogical``, as flags;
``rrlab bench report``: the saved results as an HTML report."""

from __future__ import annotations

import argparse
import json

from rrlab.bench.drain import DrainOptions, drain_bench, format_result
from rrlab.cli.main import overrides_from
from rrlab.exceptions import ConfigError
from rrlab.report import render_drain_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    drain = benches.add_parser(
        "drain",
        help="drain a backlog with pg_recvlogical, the consumer (mock) and the consumer (chdb)",
        description="Build a backlog of TaskRun changes, then drain copies of its slot with "
        "pg_recvlogical, the consumer with the mock sink and the consumer with the embedded "
        "ClickHouse, interleaved for several rounds. The result is also saved as "
        "results/bench/<timestamp>-drain.json.",
    )
    defaults = DrainOptions()
    drain.add_argument("--inserts", type=int, default=defaults.inserts, metavar="N")
    drain.add_argument(
        "--update-ratio",
        type=float,
        default=defaults.update_ratio,
        metavar="R",
        help=f"updates per insert (default {defaults.update_ratio})",
    )
    drain.add_argument("--deletes", type=int, default=defaults.deletes, metavar="N")
    drain.add_argument("--payload-kb", type=float, default=defaults.payload_kb, metavar="KB")
    drain.add_argument("--rounds", type=int, default=defaults.rounds, metavar="N")
    drain.add_argument(
        "-c", "--config", metavar="FILE", help="params file whose consumer settings to use"
    )
    drain.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a consumer setting, e.g. --set consumer.flush_batch_size=500",
    )
    drain.add_argument("--output", default=defaults.results_dir, metavar="DIR")
    drain.add_argument("--json", action="store_true", help="print the result as one JSON object")
    report = benches.add_parser(
        "report",
        help="the saved drain results as an offline HTML report",
        description="Execute notebooks/drain.ipynb on the newest drain results saved under "
        "the results folder and export it to <results>/bench/drain-report.html (self-contained, "
        "opens offline).",
    )
    report.add_argument(
        "--output",
        default=defaults.results_dir,
        metavar="DIR",
        help="the results folder the drains were saved in (default results)",
    )
    report.add_argument(
        "--latest",
        type=int,
        default=6,
        metavar="N",
        help="how many of the newest results to show (default 6)",
    )
    report.add_argument("--show-code", action="store_true",
                        help="keep the notebook's code cells in the report")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    if args.bench == "report":
        if args.latest < 1:
            raise ConfigError(f"--latest must be at least 1 (got {args.latest}).")
        print(render_drain_report(args.output, latest=args.latest, show_code=args.show_code))
        return 0
    overrides = overrides_from(args.set)
    options = DrainOptions(
        inserts=args.inserts,
        update_ratio=args.update_ratio,
        deletes=args.deletes,
        payload_kb=args.payload_kb,
        rounds=args.rounds,
        consumer_params=args.config,
        overrides=overrides,
        results_dir=args.output,
    )
    result = drain_bench(options)
    print(json.dumps(result) if args.json else format_result(result), flush=True)
    return 0 if result["all_rows_received"] else 1
