"""Every registered model at its default roi: parameters, FLOPs, time, peak memory and the fraction of the
CPU's float32 peak it reaches.

Each model is measured in its own process (so peak RSS belongs to it alone), with 1 input channel and
14 outputs (Swin-X2S on two views of its ``img_size``):

* FLOPs of one forward and of one training step (forward + backward, batch 1), counted by
  ``medswin.models.flops.count_flops``: PyTorch's counter plus the oneDNN convolution and CPU flash-attention
  kernels medswin calls directly (without them a Swin UNETR forward reads ~15x low);
* forward time under ``torch.inference_mode`` (median of ``--reps`` after a warm-up) in fp32, and in bf16
  autocast where the CPU has native bf16 (``--precisions`` to choose);
* one fp32 training step (MSE on the logits, backward; no optimiser: the FLOPs counted are the step's);
* achieved GFLOP/s and the fraction of the fp32 peak (cores x FMA units x lanes x 2 x clock,
  ``medswin.cpu.CpuInfo.peak_fp32_gflops``) for the fp32 forward and training step.

Prints a Markdown table and writes ``benchmarks/results/models_table_<device tag>.json``.

    python benchmarks/models_table.py                      # every preset except the *_base ones
    python benchmarks/models_table.py --pattern '*_tiny' --reps 1
"""

from __future__ import annotations

import argparse
import fnmatch
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

OUT_CHANNELS = 14


def _inputs(model, name: str, roi, device):
    import torch

    from medswin.models import model_kind

    if model_kind(name) == "biplanar":  # Swin-X2S: two views in, one volume out
        return tuple(torch.randn(1, 1, *model.img_size, device=device) for _ in range(2)), list(model.img_size)
    return (torch.randn(1, 1, *roi, device=device),), list(roi)


def _loss(out):
    """A scalar depending on every output of a training-mode forward (a tensor, or a dict of deep-supervision
    or per-view logits)."""
    outputs = out.values() if isinstance(out, dict) else [out]
    return sum(o.float().square().mean() for o in outputs)


def _timed(fn, reps: int, device) -> float:
    import torch

    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(opts: argparse.Namespace) -> dict:
    """Measure one model in this process."""
    import torch

    from medswin.models import create_model, model_info
    from medswin.models.flops import count_flops

    _bench.set_threads(opts.threads)
    device = torch.device(opts.device)
    name = opts.model
    info = model_info(name, 1, OUT_CHANNELS)
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, out_channels=OUT_CHANNELS).to(device)
    x, roi = _inputs(model, name, info["default_roi"], device)

    def forward():
        with torch.inference_mode():
            model(*x)

    def train_step():
        model.zero_grad(set_to_none=True)
        _loss(model(*x)).backward()

    model.eval()
    forward_flops = count_flops(forward)["total"]
    model.train()
    step_flops = count_flops(train_step)["total"]
    row = {"model": name, "params": info["params"], "roi": roi, "gflops": forward_flops / 1e9}
    row["train_gflops"] = step_flops / 1e9
    model.eval()
    for precision in opts.precisions.split(","):
        base = _bench.rss_bytes()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            row[f"forward_{precision}_s"] = _timed(forward, opts.reps, device)
        row[f"peak_{precision}_gb"] = (_bench.peak_rss_bytes() - base) / 1e9
    model.train()
    row["train_fp32_s"] = _timed(train_step, opts.reps, device)
    return row


def _efficiency(row: dict, peak_gflops: float | None) -> None:
    """Add achieved GFLOP/s and the fraction of the fp32 peak for the fp32 forward and training step."""
    row["forward_fp32_gflops_per_s"] = row["gflops"] / row["forward_fp32_s"]
    row["train_fp32_gflops_per_s"] = row["train_gflops"] / row["train_fp32_s"]
    if peak_gflops:
        row["forward_fp32_peak_fraction"] = row["forward_fp32_gflops_per_s"] / peak_gflops
        row["train_fp32_peak_fraction"] = row["train_fp32_gflops_per_s"] / peak_gflops


def markdown_table(result: dict) -> str:
    """The README table of a result JSON: FLOPs, times, GFLOP/s and the fraction of the fp32 peak."""
    cpu = result.get("cpu")
    peak = f", fp32 peak {cpu['peak_fp32_gflops']:.0f} GFLOP/s at {cpu['clock_ghz']:.2f} GHz" if cpu else ""
    bf16 = "forward_bf16_s" in result["rows"][0]
    lines = [
        f"Measured {result['date']} on {result['device_name']} ({result['threads']} threads){peak}, "
        f"torch {result['torch']}; 1 -> {OUT_CHANNELS} channels, batch 1.",
        "",
        "| model | params | roi | GFLOPs fwd / step | fwd fp32 | GFLOP/s (% peak) | "
        + ("fwd bf16 | " if bf16 else "")
        + "train step fp32 | GFLOP/s (% peak) | peak mem fwd fp32 |",
        "|---|---|---|---|---|---|" + ("---|" if bf16 else "") + "---|---|---|",
    ]
    for r in result["rows"]:
        share = (lambda k: f" ({100 * r[k]:.0f}%)") if cpu else (lambda k: "")
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {'x'.join(map(str, r['roi']))} | "
            f"{r['gflops']:.1f} / {r['train_gflops']:.1f} | {r['forward_fp32_s']:.2f} s | "
            f"{r['forward_fp32_gflops_per_s']:.0f}{share('forward_fp32_peak_fraction')} | "
            + (f"{r['forward_bf16_s']:.2f} s | " if bf16 else "")
            + f"{r['train_fp32_s']:.2f} s | {r['train_fp32_gflops_per_s']:.0f}{share('train_fp32_peak_fraction')} | "
            f"{r['peak_fp32_gb']:.2f} GB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pattern", default="*", help="models to measure (shell pattern)")
    p.add_argument("--skip", default="*_base", help="pattern of models to leave out ('' for none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--precisions", default=None, help="fp32,bf16 (default: bf16 too where the hardware has it)")
    p.add_argument("--out", default=None)
    p.add_argument("--table", metavar="JSON", help="only print the table of an earlier result")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    opts.precisions = opts.precisions or _bench.default_precisions(opts.device)
    if _bench.worker_or_table(opts, worker, markdown_table):
        return 0

    from medswin.models import list_models

    names = [n for n in list_models(opts.pattern) if not (opts.skip and fnmatch.fnmatch(n, opts.skip))]
    machine = _bench.machine_info(opts.device)
    peak = machine.get("cpu", {}).get("peak_fp32_gflops")
    rows = []
    for name in names:
        args = ["--model", name, "--device", opts.device, "--reps", str(opts.reps)]
        args += ["--threads", str(opts.threads), "--precisions", opts.precisions]
        row = _bench.run_worker(__file__, args)
        _efficiency(row, peak)
        rows.append(row)
        print(f"{name}: {row['gflops']:.1f} GFLOPs, {row['forward_fp32_gflops_per_s']:.0f} GFLOP/s fwd", flush=True)
    result = {"benchmark": "models_table", **machine, "out_channels": OUT_CHANNELS, "rows": rows}
    path = _bench.write_json(result, opts.out or _bench.result_path("models_table", opts.device))
    print("\n" + markdown_table(result) + f"\n\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
