#!/usr/bin/env bash
# The bundled example end to end: a fresh runs/example, its wall time and where the time went
# (each log line stamped with the seconds since the start, in bench-out/example.log; then the
# seconds per stage), and a copy of its reports in docs/example-report/ (read without running).
# The teacher cache starts empty, as on a fresh machine (EDGEKD_CACHE=bench-out/example-cache).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf runs/example bench-out/example-cache
mkdir -p bench-out
export EDGEKD_CACHE=bench-out/example-cache
start=$(date +%s.%N)
exec 3>&1  # stdout stays stdout; stderr alone goes through the stamping pipe, which is waited for
edgekd compress --out runs/example "$@" 2>&1 >&3 3>&- | python3 -u bench/stamp_log.py |
    tee bench-out/example.log >&2
echo "wall: $(echo "$(date +%s.%N) - $start" | bc) s" >&2
python3 bench/stamp_log.py --stages bench-out/example.log >&2
mkdir -p docs/example-report
cp runs/example/report.json runs/example/report.md runs/example/report.html runs/example/manifest.json \
    docs/example-report/
