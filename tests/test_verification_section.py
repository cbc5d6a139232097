"""The report's verification section, from metrics.json run.verify."""

from types import SimpleNamespace

from rrlab.analysis.notebook import verification_markdown

OK = {
    "ok": True, "postgres_rows": 10, "clickhouse_rows": 10, "missing": 0, "missing_ids": [],
    "extra": 0, "extra_ids": [], "stale": 0, "payload_missing": 0,
}  # fmt: skip


def _run(verify):
    return SimpleNamespace(metadata={"verify": verify} if verify is not None else {})


def test_a_matching_run_says_so() -> None:
    text = verification_markdown(_run(OK))
    assert text.startswith("**OK**") and "PostgreSQL 10" in text


def test_differences_are_counted_and_named() -> None:
    text = verification_markdown(_run({**OK, "ok": False, "missing": 2, "missing_ids": ["a", "b"]}))
    assert text.startswith("**Differs**") and "missing in ClickHouse: 2 (e.g. `a`, `b`)" in text


def test_unverified_and_failed_verifications_are_explained() -> None:
    assert "Not verified" in verification_markdown(_run(None))
    assert "could not be compared" in verification_markdown(_run({"ok": False, "error": "down"}))
