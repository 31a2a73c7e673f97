#!/usr/bin/env bash
# The bundled example with the control arm: `edgekd compress --baseline`, then the distillation
# gain over the same student trained on labels alone, with its 95 % CI, from the run's report.
# The student family is pinned to convnet, the student of README's example table (with
# torchvision installed, family "auto" may size another). Extra arguments go to compress, e.g.
#   bash bench/kd_gain_example.sh --epochs 3 --ptq --no-sensitivity
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/example-baseline
rm -rf "$out"
config=$(mktemp --suffix .toml)
trap 'rm -f "$config"' EXIT
echo 'family = "convnet"' > "$config"
start=$(date +%s.%N)
status=0
edgekd compress --baseline --config "$config" --out "$out" "$@" || status=$?
echo "wall: $(echo "$(date +%s.%N) - $start" | bc) s" >&2
test "$status" -eq 0 || test "$status" -eq 3  # a failed gate still reports the gain
grep '^Distillation gain' "$out/report.md"
