"""Bad input to ``rrlab run``: one clear paragraph on stderr, exit status 2, no traceback, no
process left behind, and the next run still works. Each case runs the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import papermill
import polars as pl
import psutil
import psycopg
import pytest
from psycopg import sql

from rrlab.infra.ch_migrations import run_migrations
from rrlab.infra.clickhouse import clickhouse_client

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "run.ipynb"
PASSWORD = "Xq7-bad-input-pw"


def rrlab_run(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    """``rrlab run --output tmp_path/results ...`` with DATABASE_URL / CLICKHOUSE_URL unset."""
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CLICKHOUSE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "rrlab", "run", "--no-progress"]
        + ["--output", str(tmp_path / "results"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**environ, **(env or {})},
    )


def assert_refused(result: subprocess.CompletedProcess, tmp_path: Path, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert any(line.startswith("rrlab: ") for line in result.stderr.splitlines())
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def params_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        ("producer: {wrokers: 2}\n", ["wrokers", "workers"]),
        ("phases: []\n", ["phases is empty"]),
        ("phases: [{name: a, duration_s: 1\n", ["is not valid YAML"]),
        ("- just\n- a list\n", ["must hold a mapping"]),
        (
            "phases: [{name: a, duration_s: 5, target_throughput: 99999999}]\n",
            ["target_throughput", "out of range"],
        ),
        ("phases: [{name: a, duration_s: 0, target_throughput: 10}]\n", ["duration_s"]),
    ],
)
def test_bad_params_files(tmp_path: Path, text: str, phrases: list[str]) -> None:
    result = rrlab_run(tmp_path, "-c", params_file(tmp_path, text))
    assert_refused(result, tmp_path, *phrases)
    assert not (tmp_path / "results").exists()  # refused before anything was created


def test_a_params_file_that_cannot_be_read(tmp_path: Path) -> None:
    # root reads any file whatever its mode, so the unreadable file is a folder
    folder = tmp_path / "params.yaml"
    folder.mkdir()
    assert_refused(rrlab_run(tmp_path, "-c", str(folder)), tmp_path, "cannot be read")


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["-t", "0"], "target_throughput"),
        (["-d", "-1"], "duration_s"),
        (["-d", "1e9"], "duration_s"),
    ],
)
def test_zero_negative_and_absurd_flags(tmp_path: Path, args: list[str], phrase: str) -> None:
    assert_refused(rrlab_run(tmp_path, *args), tmp_path, phrase, "out of range")


def test_a_malformed_database_url(tmp_path: Path) -> None:
    result = rrlab_run(
        tmp_path, "--sink", "mock", env={"DATABASE_URL": f"mysql://u:{PASSWORD}@h/db"}
    )
    assert_refused(result, tmp_path, "postgresql://")
    assert PASSWORD not in result.stderr + result.stdout


def test_an_unreachable_postgres(tmp_path: Path) -> None:
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:9/db"  # the discard port: nothing listens
    result = rrlab_run(tmp_path, "--sink", "mock", env={"DATABASE_URL": url})
    assert_refused(result, tmp_path, "127.0.0.1:9")
    assert PASSWORD not in result.stderr + result.stdout


def test_a_password_on_the_command_line_is_warned_about(tmp_path: Path) -> None:
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:9/db"
    result = rrlab_run(tmp_path, "--sink", "mock", "--database-url", url)
    assert_refused(result, tmp_path, "readable by every user", "DATABASE_URL instead")
    assert PASSWORD not in result.stderr + result.stdout
    quiet = rrlab_run(tmp_path, "--sink", "mock", "--database-url", "postgresql://u@127.0.0.1:9/db")
    assert "readable by every user" not in quiet.stderr


def _role(pg_server, *attributes: str) -> str:
    url = pg_server.url()
    name = f"bad_input_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + " ".join(attributes)).format(
                sql.Identifier(name), sql.Literal(PASSWORD)
            )
        )
    return name


def test_wrong_credentials(pg_server, tmp_path: Path) -> None:
    role = _role(pg_server, "REPLICATION", "CREATEDB")
    url = f"postgresql://{role}:not-{PASSWORD}@127.0.0.1:{pg_server.url().port}/postgres"
    result = rrlab_run(tmp_path, "--sink", "mock", env={"DATABASE_URL": url})
    assert_refused(result, tmp_path, "password")
    assert f"not-{PASSWORD}" not in result.stderr + result.stdout


def test_a_role_without_replication_privilege(pg_server, tmp_path: Path) -> None:
    role = _role(pg_server, "CREATEDB")
    url = f"postgresql://{role}:{PASSWORD}@127.0.0.1:{pg_server.url().port}/postgres"
    result = rrlab_run(tmp_path, "--sink", "mock", env={"DATABASE_URL": url})
    assert_refused(result, tmp_path, "REPLICATION")
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.slow
def test_a_drifted_clickhouse_schema_then_a_good_run(pg_server, chdb_endpoint, tmp_path) -> None:
    database = f"drifted_{uuid.uuid4().hex[:8]}"
    client = clickhouse_client(chdb_endpoint.url)
    run_migrations(client, database)
    client.command(f"ALTER TABLE {database}.task_runs_v2 DROP COLUMN queue")
    try:
        result = rrlab_run(
            tmp_path,
            "--sink",
            "clickhouse",
            "--set",
            f"clickhouse.database={database}",
            "-t",
            "200",
            "-d",
            "1",
            env={"CLICKHOUSE_URL": chdb_endpoint.url},
        )
        assert_refused(result, tmp_path, "does not match rrlab's schema", "column queue is missing")
        # nothing was left half-done: the next run (another database) completes and verifies
        good = rrlab_run(
            tmp_path,
            "--sink",
            "clickhouse",
            "--set",
            f"clickhouse.database={database}_ok",
            "-t",
            "200",
            "-d",
            "1",
            env={"CLICKHOUSE_URL": chdb_endpoint.url},
        )
        assert good.returncode == 0, good.stderr
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database}")
        client.command(f"DROP DATABASE IF EXISTS {database}_ok")
        client.close()


def test_a_results_folder_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = rrlab_run(tmp_path, "--sink", "mock", "--output", str(blocker / "results"))
    assert_refused(result, tmp_path, "Cannot write the results folder", "--output")


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A small tmpfs (root only): read-only or full on demand; unmounted afterwards."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()

    def mount(*options: str, size: str = "4k") -> Path:
        result = subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                ",".join([f"size={size}", *options]),
                "tmpfs",
                str(mount_point),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        return mount_point

    yield mount
    subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_a_read_only_results_folder(tmp_path: Path, tiny_tmpfs) -> None:
    folder = tiny_tmpfs("ro")
    result = rrlab_run(tmp_path, "--sink", "mock", "--output", str(folder / "results"))
    assert_refused(result, tmp_path, "Read-only file system", "--output")


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` up to ENOSPC; returns the filler file."""
    with contextlib.suppress(OSError), open(folder / "filler", "wb") as filler:
        while True:
            filler.write(b"x" * 512)
            filler.flush()
    return folder / "filler"


def test_a_full_disk_for_results(tmp_path: Path, tiny_tmpfs) -> None:
    folder = tiny_tmpfs()
    fill(folder)
    result = rrlab_run(tmp_path, "--sink", "mock", "--output", str(folder / "results"))
    assert_refused(result, tmp_path, "No space left on device", "free some disk space")


def test_a_disk_that_fills_up_during_the_run(tmp_path: Path, tiny_tmpfs) -> None:
    folder = tiny_tmpfs(size="1m")
    command = [sys.executable, "-m", "rrlab", "run", "--no-progress", "--sink", "mock"]
    command += ["-t", "100", "-d", "1", "--output", str(folder / "results")]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as runner:
        deadline = time.monotonic() + 120
        while not list(folder.glob("results/*/*/config.json")):
            assert runner.poll() is None, runner.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # the run has started: leave it two 4 KiB pages, room for metrics.json and no more
        filler = fill(folder)
        os.truncate(filler, filler.stat().st_size - 8192)
        stdout, stderr = runner.communicate(timeout=180)
    result = subprocess.CompletedProcess(command, runner.returncode, stdout, stderr)
    assert_refused(result, tmp_path, "No space left on device", "Free some disk space")
    (run_dir,) = folder.glob("results/*/*")
    # the run's summary was written first and whole; no half-written or temporary file
    assert json.loads((run_dir / "metrics.json").read_text())["run"]["status"] == "complete"
    assert not [path for path in run_dir.rglob(".*") if path.is_file()]
    for parquet in (run_dir / "timeseries").glob("*.parquet"):
        pl.read_parquet(parquet)


@pytest.mark.parametrize(("name", "value"), [("throughput", "abc"), ("duration", "ten")])
def test_notebook_parameters_of_the_wrong_type(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(papermill.PapermillExecutionError) as failed:
        papermill.execute_notebook(
            str(NOTEBOOK),
            str(tmp_path / "out.ipynb"),
            parameters={name: value, "output": str(tmp_path / "results")},
            kernel_name="python3",
            progress_bar=False,
        )
    assert failed.value.ename == "ConfigError"
    # the cell's output is the one-paragraph message, not a traceback through rrlab's code
    assert failed.value.traceback == [f"ConfigError: {failed.value.evalue}"]
    assert "must be a number" in failed.value.evalue and repr(value) in failed.value.evalue
    assert failed.value.evalue.startswith(f"{name} must be")  # the parameter the user set
    assert not (tmp_path / "results").exists()
