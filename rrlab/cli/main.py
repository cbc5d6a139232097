"""Entry point of the ``rrlab`` command: dispatches to one module per verb."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rrlab import __version__
from rrlab.exceptions import ConfigError, RrlabError
from rrlab.results import no_group_or_world_writes
from rrlab.urls import mask_text

# verb → module under rrlab.cli that defines add_arguments(parser) and main(args) -> int
VERBS = {
    "run": "Run load phases against the replication service and write a results folder.",
    "report": "Write a run folder's self-contained HTML report (report.html).",
    "pg": "Manage the embedded PostgreSQL server (status, url, stop, reset).",
    "verify": "Compare a run's PostgreSQL and ClickHouse: missing, extra and stale runs.",
    "bench": "Benchmarks: `bench drain` times draining a backlog against pg_recvlogical.",
}


def overrides_from(assignments: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` flags → dotted overrides (values are checked by the config model)."""
    overrides = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} must look like KEY=VALUE")
        overrides[key.strip()] = value.strip()
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrlab",
        description="Load-test and profile a PostgreSQL → ClickHouse runs replication service.",
    )
    parser.add_argument("--version", action="version", version=f"rrlab {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    for verb, help_text in VERBS.items():
        module = importlib.import_module(f"rrlab.cli.{verb}")
        sub = subparsers.add_parser(verb, help=help_text, description=help_text)
        sub.add_argument(
            "-v", "--verbose", action="store_true", help="show debug logs and tracebacks"
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        with no_group_or_world_writes():
            return int(args.handler(args) or 0)
    except RrlabError as exc:
        if verbose:
            raise
        print(f"rrlab: {mask_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rrlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
