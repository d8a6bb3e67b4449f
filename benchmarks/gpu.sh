#!/usr/bin/env bash
# medswin Swin UNETR vs MONAI SwinUNETR on one CUDA GPU, bf16 autocast (and fp32 forward for
# reference), same weights and inputs.  Runs in under 8 minutes on an H100/H200.
#   bash benchmarks/gpu.sh            # uses .venv/bin/python when present, else python3
# Writes benchmarks/results/swin_unetr_vs_monai_cuda.json and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA device"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__)
PY
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout 470 "$PY" benchmarks/swin_unetr_vs_monai.py --device cuda --precisions bf16 \
    --presets tiny,base --sizes 96,128 --reps 5 --warmup 2
