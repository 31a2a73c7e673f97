#!/usr/bin/env bash
# Create the peer-tool venv for bench/peer_torchdistill.py: torchdistill 1.1.x from PyPI plus edgekd.
# Usage: bench/setup_peer.sh [VENV_DIR]   (default: .peer-venv at the repository root)
# Idempotent: re-running on a complete venv only re-checks it.
# torch/torchvision are pinned to a pair that imports together here (2.14.1 / 0.29.1, a CUDA build
# that also runs on CPU, ~5.7 GB); PyPI's torchvision fails to import beside the CPU torch 2.13.0.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo/.peer-venv}"
python="${PYTHON:-python3.11}"

check() {
    "$venv/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as md

import torch, torchvision, torchdistill  # noqa: F401
import edgekd.example.teacher, edgekd.models.students  # noqa: F401

assert torch.__version__.startswith("2.14.1"), torch.__version__
assert torchvision.__version__.startswith("0.29.1"), torchvision.__version__
assert md.version("torchdistill").startswith("1.1."), md.version("torchdistill")
EOF
}

if [[ -x "$venv/bin/python" ]] && check; then
    echo "peer venv ready: $venv"
    exit 0
fi

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
"${pip[@]}" "torchdistill>=1.1,<1.2" "torch==2.14.1" "torchvision==0.29.1"
# edgekd's student and teacher modules import only torch, so its other dependencies are not needed.
"${pip[@]}" --no-deps -e "$repo"

check || { echo "peer venv at $venv failed its import check" >&2; exit 1; }
echo "peer venv ready: $venv"
