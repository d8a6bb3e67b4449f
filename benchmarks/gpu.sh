#!/usr/bin/env bash
# Every medswin vs MONAI benchmark on one CUDA GPU with bf16 autocast, same weights and inputs:
#   0. the CUDA tests of the sliding-window engine (GPU model, accumulator on the CPU / streamed)
#   1. swin_unetr_vs_monai.py   forward / training step of one window (tiny and base, 96^3)
#   2. inference_vs_monai.py    whole-volume sliding-window inference (160^3 and 256x256x128)
#   3. scaling.py               inference time / memory at 128^3, 192^3, 256^3 + a 512x512x300 CT
#                               through the predictor (peak host RSS under 8 GB)
#   4. training_throughput.py   training steps/s of every small preset, checkpointing off/on
# Each step has its own timeout; all four fit in 8 minutes on an H100/H200.  A step that fails or
# times out is reported and the next one still runs; the exit status is non-zero if any failed.
#   bash benchmarks/gpu.sh            # uses .venv/bin/python when present, else python3
# Writes benchmarks/results/<benchmark>_cuda.json (one per step) and prints the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PY" - <<'PY'
import datetime, torch
assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA device"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "|", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
PY
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=()
step() {  # step NAME SECONDS PYTHON-ARGS...
    local name=$1 seconds=$2
    shift 2
    echo
    echo "== $name (timeout ${seconds}s): $*"
    local start=$SECONDS
    if timeout --kill-after=10 "$seconds" "$PY" "$@"; then
        echo "== $name done in $((SECONDS - start)) s"
    else
        echo "== $name FAILED or timed out (status $?) after $((SECONDS - start)) s"
        failed+=("$name")
    fi
}
step cuda_tests 40 -m pytest -q -p no:cacheprovider tests/test_sliding_window.py -k cuda
step swin_unetr_vs_monai 130 benchmarks/swin_unetr_vs_monai.py --device cuda --precisions bf16 \
    --presets tiny,base --sizes 96 --reps 5 --warmup 2
step inference_vs_monai 100 benchmarks/inference_vs_monai.py --device cuda --precisions bf16 \
    --volumes 160,256x256x128 --reps 3
step scaling 100 benchmarks/scaling.py --device cuda --precision bf16 --sizes 128,192,256 \
    --impls medswin,monai_flash --memory-check 512x512x300
step training_throughput 100 benchmarks/training_throughput.py --device cuda --amps bf16 --steps 10 --warmup 3
echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all GPU benchmarks done; JSON in benchmarks/results/*_cuda.json"
