"""What each profiler costs the consumer: the same load under none / memray / lines / both / flame.

Runs ``rrlab.run`` once per mode (mock sink, one phase at a fixed rate, modes interleaved
over rounds so that machine noise spreads evenly) against a PostgreSQL of its own (stopped
at the end, so no other session's run shares or resets it) and prints, from each run's
metrics.json, the consumer's CPU-seconds per 1,000 records, its main-loop utilisation,
and the catch-up time after the producers stopped. A rate the consumer cannot keep up
with under a profiler shows as a long catch-up. Run::

    .venv/bin/python benchmarks/profiler_overhead.py [--rate 3000] [--duration 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import rrlab
from rrlab.infra.embedded_postgres import EmbeddedPostgres

MODES = ("none", "memray", "lines", "both", "flame")


def consumer_cost(run_dir: Path) -> dict[str, float]:
    """CPU-seconds per 1,000 records, utilisation and catch-up of the run's single phase."""
    (phase,) = json.loads((run_dir / "metrics.json").read_text())["phases"]
    busy_s = phase["duration_s"] + phase["catch_up_s"]
    cpu_s = phase["cpu_percent"]["consumer"] / 100 * busy_s
    return {
        "cpu_ms_per_1k": 1e6 * cpu_s / max(phase["records_consumed"], 1),
        "utilization": phase["consumer_utilization"]["mean"],
        "catch_up_s": phase["catch_up_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=3000, help="records/s (all producers)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    # /tmp, not a deep folder: the server's unix socket path must stay under 108 bytes
    with tempfile.TemporaryDirectory(prefix="rrlab-overhead-", dir="/tmp") as home:
        os.environ["RRLAB_HOME"] = home
        try:
            results = measure(args)
        finally:
            EmbeddedPostgres(home).stop(force=True)
    report(args, results)


def measure(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in args.modes}
    with tempfile.TemporaryDirectory(prefix="rrlab-overhead-runs-") as output:
        for _ in range(args.rounds):
            for mode in args.modes:
                run_dir = rrlab.run(
                    sink="mock",
                    profile=mode,
                    output=output,
                    progress=False,
                    overrides={"phases": [{"name": "load", "duration_s": args.duration,
                                           "target_throughput": args.rate}]},
                )  # fmt: skip
                results[mode].append(consumer_cost(run_dir))
    return results


def report(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
    print(f"{args.rate:,} records/s for {args.duration:g} s, mock sink, {args.rounds} round(s)")
    print(
        f"{'mode':<8}{'CPU ms / 1k records':>21}{'x none':>8}{'utilisation':>13}{'catch-up s':>12}"
    )
    base = statistics.median(r["cpu_ms_per_1k"] for r in results.get("none", [])) or None
    for mode, runs in results.items():
        cpu = statistics.median(r["cpu_ms_per_1k"] for r in runs)
        busy = statistics.median(r["utilization"] for r in runs)
        catch_up = statistics.median(r["catch_up_s"] for r in runs)
        ratio = f"{cpu / base:.2f}" if base else "-"
        print(f"{mode:<8}{cpu:>21.1f}{ratio:>8}{busy:>13.0%}{catch_up:>12.1f}")


if __name__ == "__main__":
    main()
