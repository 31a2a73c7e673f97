#!/usr/bin/env bash
# The bundled example end to end: a fresh runs/example, its wall time, and a copy of its reports
# in docs/example-report/ (so they can be read without running anything).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf runs/example
start=$(date +%s.%N)
edgekd compress --out runs/example "$@"
echo "wall: $(echo "$(date +%s.%N) - $start" | bc) s" >&2
mkdir -p docs/example-report
cp runs/example/report.json runs/example/report.md runs/example/report.html runs/example/manifest.json \
    docs/example-report/
