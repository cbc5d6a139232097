"""``rrlab verify RUN_DIR``: compare a run's PostgreSQL and ClickHouse; exit 1 on any difference."""

from __future__ import annotations

import argparse
import json

from rrlab.verify import VERIFY_FILE, verify_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (holds config.json)")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="the user's PostgreSQL server the run used (else DATABASE_URL)",
    )
    parser.add_argument(
        "--clickhouse-url",
        metavar="URL",
        help="the user's ClickHouse server the run used (else CLICKHOUSE_URL)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.epilog = (
        f"Writes RUN_DIR/{VERIFY_FILE}. Exit status: 0 when nothing is missing, extra or stale; "
        "1 when something is; 2 when the comparison could not be made."
    )


def main(args: argparse.Namespace) -> int:
    report = verify_run(
        args.run_dir, database_url=args.database_url, clickhouse_url=args.clickhouse_url
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1
