"""User-facing errors of rrlab.

Every error a user can cause (bad configuration, unreachable server, missing
privilege, ...) is one of these classes. Their message is the whole story: what
went wrong and how to fix it. The CLI prints the message without a traceback
(unless ``-v``); notebooks show it as the cell's error.
"""


class RrlabError(Exception):
    """Base class for errors whose message is meant for the user."""

    def _render_traceback_(self) -> list[str]:
        # IPython's hook: a notebook cell (and papermill) shows the message alone, as the
        # CLI does without -v; the frames inside rrlab would only bury it
        return [f"{type(self).__name__}: {self}"]


class ConfigError(RrlabError):
    """A configuration value, params file or notebook parameter is invalid."""


class UrlError(ConfigError):
    """A DATABASE_URL / CLICKHOUSE_URL cannot be parsed or is unsupported."""


class PostgresError(RrlabError):
    """PostgreSQL is unreachable, refuses us, or is not set up for logical replication."""


class EmbeddedPostgresError(PostgresError):
    """The embedded PostgreSQL server could not be started, stopped or reset."""


class ClickHouseError(RrlabError):
    """ClickHouse is unreachable, refuses us, or its schema is not what rrlab expects."""


class ReplicationError(RrlabError):
    """The replication stream failed: missing slot or publication, slot in use, protocol error."""


class SlotInUseError(ReplicationError):
    """Another process streams from the replication slot."""


class SinkError(RrlabError):
    """Rows could not be written to the sink after every retry."""


class RunError(RrlabError):
    """A run could not start or a child process failed."""


class ResultsError(RrlabError):
    """The results folder cannot be written or a run folder cannot be read."""


class RunInterruptedError(RrlabError):
    """The run was stopped by Ctrl+C or SIGTERM; what was measured so far is in ``run_dir``."""

    def __init__(self, message: str, run_dir: object) -> None:
        super().__init__(message)
        self.run_dir = run_dir
