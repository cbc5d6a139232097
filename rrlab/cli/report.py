"""``rrlab report RUN_DIR``: the run's notebook executed and exported to RUN_DIR/report.html."""

from __future__ import annotations

import argparse

from rrlab.report import render_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run folder: results/<date>/<time>-<name>"
    )
    parser.add_argument(
        "--show-code", action="store_true", help="keep the notebook's code cells in the report"
    )


def main(args: argparse.Namespace) -> int:
    print(render_report(args.run_dir, show_code=args.show_code), flush=True)
    return 0
