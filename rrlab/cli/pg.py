"""``rrlab pg``: start, inspect, stop or reset the embedded PostgreSQL server.

Runs never stop the shared server; ``stop`` and ``reset`` refuse while other sessions are
connected (another run) unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import json

from rrlab.infra.embedded_postgres import EmbeddedPostgres


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("start", help="start the server (no-op if it runs) and print its URL")
    status = actions.add_parser("status", help="show whether the server runs, its URL and data dir")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    actions.add_parser("url", help="print the server's URL (no secrets in it)")
    for name, help_text in (
        ("stop", "stop the server"),
        ("reset", "stop the server and delete its data dir"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "--force", action="store_true", help="even while other sessions (runs) are connected"
        )


def main(args: argparse.Namespace) -> int:
    server = EmbeddedPostgres()
    if args.action == "start":
        print(server.start().masked)
    elif args.action == "url":
        print(server.url().masked)
    elif args.action == "status":
        status = server.status()
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            width = max(map(len, status))
            for key, value in status.items():
                print(f"{key:<{width}}  {value if value is not None else '-'}")
    elif args.action == "stop":
        stopped = server.stop(force=args.force)
        print("stopped" if stopped else "not running")
    elif args.action == "reset":
        server.reset(force=args.force)
        print(f"reset: deleted {server.data_dir}")
    return 0
