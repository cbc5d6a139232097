"""Secrets stay secret: a run against password-protected servers writes no password anywhere
(logs, output, config.json, metrics.json, time series, executed notebook, HTML report) and
puts none on a child's command line; the files it writes are not world-writable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psutil
import psycopg
import pytest
from psycopg import sql

from rrlab.config import load_config
from rrlab.infra.clickhouse import EmbeddedClickHouse
from rrlab.infra.pg_setup import drop_profiling_database

PG_PASSWORD = "Pg-Zebra/4242 secret"
CH_PASSWORD = "Ch-Okapi@7373"


def secret_forms(password: str) -> list[bytes]:
    """The password as it may leak: plain, and URL-encoded as in a URL."""
    return [password.encode(), quote(password, safe="").encode()]


def cmdlines_of_children(pid: int) -> list[str]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    lines = []
    for child in children:
        try:
            lines.append(" ".join(child.cmdline()))
        except psutil.Error:
            continue
    return lines


def run_watching_argv(
    command: list[str], env: dict[str, str]
) -> tuple[int, bytes, bytes, list[str]]:
    """Run ``command``; also return the command lines of its descendants, sampled meanwhile."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    argvs: list[str] = []
    try:
        while process.poll() is None:
            argvs += cmdlines_of_children(process.pid)
            time.sleep(0.3)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stdout, stderr, argvs


@pytest.mark.slow
def test_no_password_in_any_output_argv_or_file(pg_server, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    role = f"secure_{suffix}"
    names = {
        "postgres.database_name": f"sec_{suffix}",
        "consumer.slot_name": f"sec_slot_{suffix}",
        "consumer.publication_name": f"sec_pub_{suffix}",
    }
    with psycopg.connect(pg_server.url().url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN REPLICATION CREATEDB PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(PG_PASSWORD)
            )
        )
    port = pg_server.url().port
    database_url = f"postgresql://{role}:{quote(PG_PASSWORD, safe='')}@127.0.0.1:{port}/postgres"
    secrets = secret_forms(PG_PASSWORD) + secret_forms(CH_PASSWORD)
    command = [sys.executable, "-m", "rrlab", "run", "-v", "--sink", "clickhouse"]
    command += ["-t", "500", "-d", "3", "--output", str(tmp_path / "results")]
    command += [f"--set={key}={value}" for key, value in names.items()]
    try:
        with EmbeddedClickHouse(tmp_path / "users-clickhouse", password=CH_PASSWORD) as server:
            assert quote(CH_PASSWORD, safe="") in server.url
            env = {**os.environ, "DATABASE_URL": database_url, "CLICKHOUSE_URL": server.url}
            code, stdout, stderr, argvs = run_watching_argv(command, env)
            assert code == 0, stderr.decode(errors="replace")[-3000:]
            run_dir = Path(stdout.decode().strip().splitlines()[-1])
            verify = subprocess.run(
                [sys.executable, "-m", "rrlab", "verify", "-v", str(run_dir)],
                env=env,
                capture_output=True,
                timeout=120,
            )
            assert verify.returncode == 0, verify.stderr.decode(errors="replace")
    finally:
        drop_profiling_database(pg_server.url(), load_config(overrides=names))

    # the consumer and the producer were seen, and no argv carried a secret (ps shows argv
    # to every user)
    seen = " ".join(argvs)
    assert "rrlab.service.consumer" in seen and "rrlab.producer" in seen
    for line in argvs:
        assert not any(secret.decode() in line for secret in secrets), line

    report = subprocess.run(
        [sys.executable, "-m", "rrlab", "report", str(run_dir)], capture_output=True, timeout=300
    )
    assert report.returncode == 0, report.stderr.decode(errors="replace")[-3000:]
    outputs = {
        "run stdout": stdout,
        "run stderr": stderr,
        "verify output": verify.stdout + verify.stderr,
        "report output": report.stdout + report.stderr,
    }
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert {"config.json", "metrics.json", "report.html", "consumer.log"} <= {
        path.name for path in files
    }
    outputs |= {str(path.relative_to(run_dir)): path.read_bytes() for path in files}
    leaks = [name for name, data in outputs.items() if any(s in data for s in secrets)]
    assert leaks == []

    # nothing rrlab wrote is world-writable
    for path in [run_dir, *run_dir.rglob("*")]:
        assert not path.stat().st_mode & 0o002, path


def test_an_error_naming_a_server_masks_its_password(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:9?username=default&password={quote(CH_PASSWORD, safe='')}"
    env = {**os.environ, "CLICKHOUSE_URL": url}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "rrlab", "run", "--sink", "clickhouse", "-t", "10", "-d", "1"]
        + ["--output", str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert b"127.0.0.1:9" in result.stderr
    assert not any(s in result.stdout + result.stderr for s in secret_forms(CH_PASSWORD))


def test_nothing_a_run_writes_is_world_writable_even_under_umask_0(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CLICKHOUSE_URL")}
    suffix = uuid.uuid4().hex[:8]
    result = subprocess.run(
        [sys.executable, "-m", "rrlab", "run", "--no-progress", "--sink", "mock"]
        + ["-t", "100", "-d", "1", "--output", str(tmp_path / "results")]
        + [
            f"--set=postgres.database_name=umask_{suffix}",
            f"--set=consumer.slot_name=umask_{suffix}",
        ]
        + [f"--set=consumer.publication_name=umask_{suffix}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        umask=0,
    )
    assert result.returncode == 0, result.stderr
    written = [tmp_path / "results", *(tmp_path / "results").rglob("*")]
    assert {path.name for path in written} >= {"consumer.log", "producer-0.log", "lag.parquet"}
    assert [path for path in written if path.stat().st_mode & 0o022] == []
