"""``rrlab run``: flags mapped onto :func:`rrlab.api.run`; prints the run folder last."""

from __future__ import annotations

import argparse
import json
import sys

from rrlab.api import run
from rrlab.cli.main import overrides_from
from rrlab.exceptions import RunInterruptedError
from rrlab.urls import mask_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="params file (YAML or JSON)")
    parser.add_argument("-t", "--throughput", type=int, metavar="N", help="records/s per phase")
    parser.add_argument("-d", "--duration", type=float, metavar="S", help="seconds per phase")
    parser.add_argument("--sink", choices=["chdb", "clickhouse", "mock"], help="ClickHouse sink")
    parser.add_argument(
        "--mock-clickhouse", action="store_true", help="same as --sink mock (no ClickHouse I/O)"
    )
    parser.add_argument(
        "--profile",
        choices=["none", "memray", "lines", "both", "flame"],
        help="profile the consumer",
    )
    parser.add_argument("--output", metavar="DIR", help="results folder (default results/)")
    parser.add_argument("--run-name", metavar="NAME", help="name of the run folder")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="a PostgreSQL server to use; one with a password belongs in DATABASE_URL instead",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting, e.g. --set consumer.flush_batch_size=100 (repeatable)",
    )
    parser.add_argument(
        "--chaos",
        metavar="kill-consumer=N,kill-producer=N",
        help="SIGKILL the consumer / a producer N times at random moments of the load phases "
        "(either or both, optionally ,seed=S)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    overrides = overrides_from(args.set)
    if args.database_url and mask_url(args.database_url) != args.database_url:
        print(
            "rrlab: warning: the password in --database-url is readable by every user of this "
            "machine (ps) while the run lasts; put the URL in DATABASE_URL instead.",
            file=sys.stderr,
            flush=True,
        )
    try:
        run_dir = run(
            args.config,
            throughput=args.throughput,
            duration=args.duration,
            sink=args.sink,
            mock_clickhouse=args.mock_clickhouse,
            profile=args.profile,
            output=args.output,
            run_name=args.run_name,
            verbose=args.verbose or None,
            database_url=args.database_url,
            chaos=args.chaos,
            overrides=overrides,
            progress=not args.no_progress,
        )
    except RunInterruptedError as exc:
        print(exc, flush=True)
        print(exc.run_dir, flush=True)
        return 130
    verified = json.loads((run_dir / "metrics.json").read_text())["run"].get("verify", {})
    differs = bool(verified) and not verified.get("ok")
    if differs:
        print("rrlab: verify found differences between PostgreSQL and ClickHouse "
              f"(see {run_dir / 'verify.json'})", file=sys.stderr)  # fmt: skip
    print(run_dir, flush=True)
    return 1 if differs else 0
