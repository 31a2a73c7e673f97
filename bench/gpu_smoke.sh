#!/usr/bin/env bash
# GPU smoke test: run once on a machine with an NVIDIA GPU to exercise every CUDA path of edgekd
# and get one PASS/FAIL/SKIP line per step. Setup, from the repository root:
#
#   pip install torch                        # a CUDA build of torch (pytorch.org lists the index URL)
#   pip install -e '.[test,tensorrt]'
#   pip uninstall -y onnxruntime && pip install onnxruntime-gpu    # edgekd pulls the CPU build
#
# Run:  bash bench/gpu_smoke.sh [OUT_DIR]    (default bench-out/gpu-smoke; PYTHON=... picks python3)
#
# Steps (checks in bench/gpu_smoke.py; each one's output in OUT_DIR/logs/STEP.log, details in
# OUT_DIR/STEP.json, the summary in OUT_DIR/summary.txt):
#   env             nvidia-smi, torch + CUDA, onnxruntime + providers, tensorrt, trtexec
#   train           edgekd compress --device cuda --epochs 2 --qat-epochs 1 --target
#                   jetson-orin-nano-8gb (bundled example): distillation must run on CUDA under
#                   autocast (AMP), QAT on CUDA; exports teacher/student_fp32/student_int8.onnx
#   distill-live    edgekd distill --device cuda --augment crop: the teacher runs live on CUDA
#   ddp             edgekd distill --nproc 2 --device auto (NCCL), with 2+ GPUs only
#   ort-cuda        the three models on ONNX Runtime's CUDAExecutionProvider: the session must not
#                   fall back to CPU, nodes must run on CUDA, top-1 must agree with CPU; plus
#                   edgekd bench on a CUDA host profile, and the providers compress's validate used
#   tensorrt-build  edgekd build-engine student_int8.onnx --target jetson-orin-nano-8gb: INT8 coverage
#   tensorrt-run    the device bundle (what validate --remote runs on a Jetson) builds, runs and
#                   times the engine here; top-1 must agree with ONNX Runtime CPU
#   pytest          python -m pytest -m 'gpu or tensorrt' (skipped by default)
#
# Exit: 0 no step failed, 1 a step failed, 2 no CUDA GPU here (one line on stderr).
set -euo pipefail

PYTHON=${PYTHON:-python3}
out_arg=${1:-bench-out/gpu-smoke}
bench=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname -- "$bench")
helper=$bench/gpu_smoke.py

stop() {
	printf 'gpu_smoke: %s\n' "$1" >&2
	exit 2
}

command -v nvidia-smi >/dev/null 2>&1 || stop "no CUDA GPU: nvidia-smi not found"
nvidia-smi -L >/dev/null 2>&1 || stop "no CUDA GPU: nvidia-smi -L failed (is the NVIDIA driver loaded?)"
command -v "$PYTHON" >/dev/null 2>&1 || stop "no Python: $PYTHON not found (set PYTHON)"
if ! why=$("$PYTHON" "$helper" preflight 2>&1); then
	stop "${why##*$'\n'}"
fi

mkdir -p -- "$out_arg"
out=$(cd -- "$out_arg" && pwd)
for d in run live ddp engine trt-run ort targets teacher-cache pytest-tmp logs; do
	rm -rf -- "${out:?}/$d"
done
mkdir -p -- "$out/logs"
export PYTHONUNBUFFERED=1
cd -- "$root"

names=() statuses=() reasons=()

# step NAME: run the helper's check NAME; its last "VERDICT STATUS: reason" line is the result
step() {
	local name=$1 log=$out/logs/$1.log rc=0 verdict
	printf '\n=== %s\n' "$name"
	"$PYTHON" "$helper" "$name" "$out" 2>&1 | tee -- "$log" || rc=$?
	verdict=$(grep -E '^VERDICT (PASS|FAIL|SKIP): ' -- "$log" | tail -n 1) || verdict=""
	verdict=${verdict#VERDICT }
	if [[ -z $verdict ]]; then
		verdict="FAIL: stopped (exit $rc) without a verdict; see $log"
	elif [[ $rc -ne 0 && $verdict != FAIL:* ]]; then
		verdict="FAIL: exit $rc after ${verdict}"
	fi
	names+=("$name")
	statuses+=("${verdict%%:*}")
	reasons+=("${verdict#*: }")
}

for s in env train distill-live ddp ort-cuda tensorrt-build tensorrt-run pytest; do
	step "$s"
done

printf '\n=== summary (%s)\n' "$out"
for i in "${!names[@]}"; do
	printf '%-4s  %-14s  %s\n' "${statuses[i]}" "${names[i]}" "${reasons[i]}"
done | tee -- "$out/summary.txt"
for status in "${statuses[@]}"; do
	if [[ $status == FAIL ]]; then
		exit 1
	fi
done
