"""Soak: a long run at a moderate rate with random consumer kills, ending with a clean verify.

Not a test (it takes half an hour): ``.venv/bin/python scripts/soak.py --minutes 30``.
It runs ``rrlab.run`` on the embedded servers with ``--chaos kill-consumer=N``, then
prints one summary line per phase and the verify outcome; exit status 0 only when the
run completed and verify found no missing, extra or stale run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import rrlab
from rrlab.exceptions import RrlabError


def soak_phases(minutes: float, rate: int, phase_minutes: float) -> list[dict]:
    """A short warmup, then phases of ``phase_minutes`` filling ``minutes`` of load."""
    phases = [{"name": "warmup", "duration_s": 30, "target_throughput": min(rate, 1000)}]
    remaining_s = minutes * 60 - 30
    index = 0
    while remaining_s > 0:
        index += 1
        duration_s = min(phase_minutes * 60, remaining_s)
        phases.append(
            {"name": f"soak-{index}", "duration_s": duration_s, "target_throughput": rate}
        )
        remaining_s -= duration_s
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30, help="total load time")
    parser.add_argument("--rate", type=int, default=3000, help="records/s")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs to the consumer")
    parser.add_argument("--seed", type=int, default=None, help="chaos seed (random if omitted)")
    parser.add_argument("--phase-minutes", type=float, default=5, help="length of each phase")
    parser.add_argument("--sink", default="chdb", choices=["chdb", "clickhouse"])
    parser.add_argument("--output", default="results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    seed = args.seed if args.seed is not None else int(time.time())
    started = time.monotonic()
    try:
        run_dir = rrlab.run(
            overrides={"phases": soak_phases(args.minutes, args.rate, args.phase_minutes)},
            sink=args.sink,
            output=args.output,
            run_name="soak",
            chaos=f"kill-consumer={args.kills},seed={seed}",
            progress=False,
        )
    except RrlabError as exc:
        print(f"soak: the run failed: {exc}", file=sys.stderr)
        return 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = metrics["run"]
    print(f"soak: {args.minutes:g} min at {args.rate:,}/s, {args.kills} kills (seed {seed}), "
          f"wall {time.monotonic() - started:,.0f} s; run folder {run_dir}")  # fmt: skip
    for phase in metrics["phases"]:
        lag = phase.get("replication_lag_ms") or {}
        print(
            f"  {phase['name']:>8}: produced {phase.get('records_produced', 0):>10,} "
            f"consumed {phase.get('records_consumed', 0):>10,} "
            f"lag p99 {lag.get('p99') or 0:>8,.0f} ms  catch-up {phase.get('catch_up_s')} s  "
            f"producer errors {phase.get('producer_errors', 0)}"
        )
    verify = run.get("verify", {})
    counts = {
        k: verify.get(k)
        for k in (
            "postgres_rows",
            "clickhouse_rows",
            "missing",
            "extra",
            "stale",
            "payload_missing",
            "error",
        )
    }
    print(f"  status {run.get('status')}, consumer restarts {run.get('consumer_restarts')}, "
          f"verify ok={verify.get('ok')} {json.dumps(counts)}")  # fmt: skip
    return 0 if run.get("status") == "complete" and verify.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
