"""Two runs on one profiling database: the second is refused, the first is left alone."""

import os
import socket

import pytest

from rrlab.exceptions import PostgresError
from rrlab.runner.infrastructure import profiling_database_claim


def test_a_second_run_on_the_same_database_is_refused(pg_url) -> None:
    with profiling_database_claim(pg_url, "claimed_db"):
        with (
            pytest.raises(
                PostgresError, match="Another rrlab run .* is using the profiling"
            ) as refused,
            profiling_database_claim(pg_url, "claimed_db"),
        ):
            pass
        # the message names the run holding the database (here: this process)
        assert f"(rrlab run pid {os.getpid()} on {socket.gethostname()}, since " in str(
            refused.value
        )
        with profiling_database_claim(pg_url, "another_db"):  # other names are free
            pass
    with profiling_database_claim(pg_url, "claimed_db"):  # released with the first run
        pass
