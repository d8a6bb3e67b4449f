"""Every registered model at its default roi: parameters, FLOPs, forward time, peak memory.

Each model is measured in its own process (Swin-X2S on two views of its ``img_size``) (so peak RSS belongs to it alone): build with 1 input
channel and 14 outputs, count parameters, count FLOPs of one forward with
``torch.utils.flop_counter`` (convolutions and matmuls; attention through SDPA included), then time
``--reps`` forwards under ``torch.inference_mode`` after a warm-up, in fp32 and in bf16 autocast.
Prints a Markdown table and writes ``benchmarks/results/models_table_<device>.json``.

    python benchmarks/models_table.py                      # every preset except the *_base ones
    python benchmarks/models_table.py --pattern '*' --reps 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(name: str, device: str, reps: int) -> dict:
    """Measure one model in this process."""
    import resource

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medswin.models import create_model, model_info, model_kind

    info = model_info(name, 1, 14)
    dev = torch.device(device)
    model = create_model(name, in_channels=1, out_channels=14).to(dev).eval()
    roi = info["default_roi"]
    if model_kind(name) == "biplanar":  # Swin-X2S: two views in, one volume out
        roi = model.img_size
        x = tuple(torch.randn(1, 1, *roi, device=dev) for _ in range(2))
    else:
        x = (torch.randn(1, 1, *roi, device=dev),)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(*x)
    flops = counter.get_total_flops()
    row = {"model": name, "params": info["params"], "roi": list(roi), "gflops": flops / 1e9}
    for precision in ("fp32", "bf16"):
        times = []
        base = _rss() if dev.type == "cpu" else torch.cuda.memory_allocated()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for i in range(reps + 1):
            t0 = time.perf_counter()
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                model(*x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        peak = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            if dev.type == "cpu"
            else torch.cuda.max_memory_allocated()
        ) - base
        row[f"forward_{precision}_s"] = statistics.median(times)
        row[f"peak_{precision}_gb"] = peak / 1e9
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pattern", default="*", help="models to measure (shell pattern)")
    p.add_argument("--skip", default="*_base", help="pattern of models to leave out ('' for none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args.reps)))
        return 0
    import fnmatch

    import torch

    from medswin.models import list_models

    names = [n for n in list_models(args.pattern) if not (args.skip and fnmatch.fnmatch(n, args.skip))]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    print("| model | params | roi | GFLOPs | fwd fp32 | fwd bf16 | peak mem fp32 | peak mem bf16 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        cmd = [sys.executable, __file__, "--worker", name, "--device", args.device, "--reps", str(args.reps)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(
            f"| {name} | {r['params'] / 1e6:.2f}M | {'x'.join(map(str, r['roi']))} | {r['gflops']:.1f} | "
            f"{r['forward_fp32_s']:.2f} s | {r['forward_bf16_s']:.2f} s | {r['peak_fp32_gb']:.2f} GB | "
            f"{r['peak_bf16_gb']:.2f} GB |",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"models_table_{args.device}.json"
    path.write_text(
        json.dumps(
            {
                "benchmark": "models_table",
                "device": args.device,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
