"""``python -m rrlab.producer``: one producer process, driven by the runner over its channel.

The profiling database URL comes from the environment (RRLAB_DATABASE_URL), never argv.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rrlab.config import load_child_config
from rrlab.exceptions import RrlabError
from rrlab.infra.pg_setup import load_fixtures
from rrlab.infra.postgres import connect
from rrlab.producer.worker import run_producer
from rrlab.profiling.line_profile import PRODUCER_TARGETS, install_from_environment
from rrlab.runner.ipc import ChildChannel
from rrlab.urls import mask_text, parse_postgres_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rrlab.producer", description=__doc__)
    parser.add_argument("--config", help="the run's config.json")
    parser.add_argument("--worker-id", type=int, default=0)
    args = parser.parse_args(argv)
    install_from_environment(PRODUCER_TARGETS)  # line-profiler, when the runner asked for it
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    channel = ChildChannel.from_environment()
    if channel is None:
        print("producer: run me through `rrlab run` (no runner channel found)", file=sys.stderr)
        return 2
    try:
        config = load_child_config(args.config)
        database_url = os.environ["RRLAB_DATABASE_URL"]
        with connect(parse_postgres_url(database_url)) as conn:
            fixtures = load_fixtures(conn)
        run_producer(
            args.worker_id,
            database_url,
            config.producer,
            fixtures,
            channel.next_command,
            channel.send,
        )
    except (RrlabError, KeyError) as exc:
        print(f"producer: {mask_text(str(exc))}", file=sys.stderr)
        return 2
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
