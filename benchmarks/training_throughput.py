"""Training throughput: optimiser steps per second and peak memory of each model's small preset.

For every registered 3D model (``*_small``; Swin-X2S, the biplanar model, is left out) at its
default roi (96^3; ``--roi`` to change), batch ``--batch`` (1), 1 input channel and the 14 btcv
classes, one full training step as medswin's trainer takes it: forward under autocast, DiceCE
(with deep supervision for dict outputs, ``medswin.training.losses.make_loss``), backward, gradient
clipping at 1.0, AdamW.  With and without gradient checkpointing (``use_checkpoint``), in fp32 and
in bf16 autocast.  Where MONAI has the model (``SwinUNETR``, same feature size, same
``use_checkpoint``), the identical step runs on MONAI's implementation with the same weights.

Each configuration runs in its own process: ``--warmup`` steps, then ``--steps`` timed steps
(median).  Memory: peak RSS above the RSS once the model, optimiser and batch exist (CUDA:
``torch.cuda.max_memory_allocated`` above the allocation at that point).

    python benchmarks/training_throughput.py                 # 96^3, every small model, fp32+bf16, ckpt off/on (~12 min, 2 threads)
    python benchmarks/training_throughput.py --quick         # 64^3, one timed step each (~4 min)
    python benchmarks/training_throughput.py --models swin_unetr_small --amps bf16 --device cuda --steps 10
Writes ``benchmarks/results/training_throughput_<device tag>.json`` (``cpu-avx2``, ``cpu-amx``, ...; ``..._quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

CLASSES = 14
MONAI_MODELS = ("swin_unetr_",)  # registry prefixes MONAI has an implementation of


def worker(a: argparse.Namespace) -> dict:
    """Time one (implementation, model, precision, checkpointing) configuration in this process."""
    import torch

    from medswin.data.spec import get_dataset_spec
    from medswin.models import create_model, model_info
    from medswin.training.losses import make_loss
    from medswin.training.probe import training_step

    _bench.set_threads(a.threads)
    device = torch.device(a.device)
    ckpt = a.ckpt == "on"
    if a.impl == "monai":
        from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

        feature_size = model_info(a.model, 1, CLASSES)["preset"]["feature_size"]
        model = MonaiSwinUNETR(in_channels=1, out_channels=CLASSES, feature_size=feature_size, use_checkpoint=ckpt)
        model.load_state_dict(torch.load(a.weights, map_location="cpu", weights_only=True))
    else:
        model = create_model(a.model, in_channels=1, out_channels=CLASSES, use_checkpoint=ckpt)
        if a.weights:  # MONAI's initial weights, so both implementations start from the same point
            model.load_monai_state_dict(torch.load(a.weights, map_location="cpu", weights_only=True))
    model.to(device).train()
    roi = _bench.parse_shape(a.roi)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 1, *roi, generator=gen).to(device)
    y = torch.randint(0, CLASSES, (a.batch, 1, *roi), generator=gen).to(device)
    loss_fn = make_loss(get_dataset_spec("btcv"), model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)

    def step() -> float:
        return training_step(model, loss_fn, opt, x, y, a.amp)  # the trainer's step (medswin.training.probe)

    base = _bench.rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times, losses = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        losses.append(step())
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    out = {
        "step_s": statistics.median(times),
        "steps_per_s": 1.0 / statistics.median(times),
        "times_s": times,
        "first_loss": losses[0],
        "peak_mem_gb": (_bench.peak_rss_bytes() - base) / 1e9,
    }
    if device.type == "cuda":
        out["peak_mem_gb"] = (torch.cuda.max_memory_allocated() - base_cuda) / 1e9
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="*_small", help="registry pattern or comma-separated names")
    p.add_argument("--roi", default=None, help="patch size (default: each model's default roi)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--amps", default=None, help="fp32,bf16 (default: bf16 too where the hardware has it)")
    p.add_argument("--ckpts", default="off,on", help="gradient checkpointing settings to run")
    p.add_argument("--no-monai", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="64^3 patches, one timed step per configuration")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", default=None)
    p.add_argument("--table", metavar="JSON", help="only print the table of an earlier result")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--impl", "--model", "--amp", "--ckpt", "--weights"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    opts.amps = opts.amps or _bench.default_precisions(opts.device)
    if _bench.worker_or_table(opts, worker, markdown_table):
        return 0
    if opts.quick:
        opts.roi, opts.steps = opts.roi or "64", 1

    import torch

    from medswin.models import list_models, model_info, model_kind

    names = opts.models.split(",") if "," in opts.models or opts.models in list_models() else list_models(opts.models)
    names = [n for n in names if model_kind(n) == "volume"]
    if not names:
        p.error(f"no 3D model matches {opts.models!r}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            roi = opts.roi or "x".join(map(str, model_info(name, 1, CLASSES)["default_roi"]))
            has_monai = not opts.no_monai and name.startswith(MONAI_MODELS)
            weights = ""
            if has_monai:  # the same initial weights for both implementations
                from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

                torch.manual_seed(0)
                weights = os.path.join(tmp, f"{name}.pt")
                fs = model_info(name, 1, CLASSES)["preset"]["feature_size"]
                torch.save(MonaiSwinUNETR(in_channels=1, out_channels=CLASSES, feature_size=fs).state_dict(), weights)
            for amp in opts.amps.split(","):
                for ckpt in opts.ckpts.split(","):
                    row: dict = {"model": name, "roi": roi, "amp": amp, "checkpointing": ckpt}
                    for impl in ("medswin", "monai") if has_monai else ("medswin",):
                        args = [
                            "--impl",
                            impl,
                            "--model",
                            name,
                            "--roi",
                            roi,
                            "--batch",
                            str(opts.batch),
                            "--amp",
                            amp,
                            "--ckpt",
                            ckpt,
                            "--device",
                            opts.device,
                            "--threads",
                            str(opts.threads),
                            "--warmup",
                            str(opts.warmup),
                            "--steps",
                            str(opts.steps),
                            "--weights",
                            weights,
                        ]
                        r = _bench.run_worker(__file__, args, timeout=opts.timeout)
                        row.update({f"{impl}_{k}": v for k, v in r.items() if k != "times_s"})
                    if has_monai:
                        row["speedup_vs_monai"] = row["medswin_steps_per_s"] / row["monai_steps_per_s"]
                        row["mem_ratio_vs_monai"] = row["medswin_peak_mem_gb"] / max(row["monai_peak_mem_gb"], 1e-9)
                    rows.append(row)
                    print(_format_row(row), flush=True)
    result = {
        "benchmark": "training_throughput",
        **_bench.machine_info(opts.device),
        "batch": opts.batch,
        "classes": CLASSES,
        "steps": opts.steps,
        "warmup": opts.warmup,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "rows": rows,
    }
    path = _bench.write_json(result, opts.out or _bench.result_path("training_throughput", opts.device, opts.quick))
    print("\n" + markdown_table(result))
    print(f"\nwrote {path}")
    return 0


def markdown_table(result: dict) -> str:
    """README table of a result JSON."""
    lines = [
        f"Measured {result['date']} on {result['device_name']} ({result['threads']} threads), torch {result['torch']}, "
        f"MONAI {result['monai']}; batch {result['batch']}, {result['classes']} classes, median of {result['steps']} steps.",
        "",
        "| model | patch | AMP | checkpointing | medswin steps/s | MONAI steps/s | speed-up | peak memory medswin / MONAI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "monai_steps_per_s" in r:
            monai, speedup = f"{r['monai_steps_per_s']:.3f}", f"**{r['speedup_vs_monai']:.2f}x**"
            mem = f"{r['medswin_peak_mem_gb']:.2f} / {r['monai_peak_mem_gb']:.2f} GB ({r['mem_ratio_vs_monai']:.2f}x)"
        else:
            monai, speedup, mem = "-", "-", f"{r['medswin_peak_mem_gb']:.2f} GB"
        lines.append(
            f"| {r['model']} | {r['roi']} | {r['amp']} | {r['checkpointing']} | {r['medswin_steps_per_s']:.3f} "
            f"| {monai} | {speedup} | {mem} |"
        )
    return "\n".join(lines)


def _format_row(r: dict) -> str:
    text = (
        f"{r['model']:>20} {r['roi']:>10} {r['amp']} ckpt {r['checkpointing']:>3} | medswin {r['medswin_step_s']:6.2f} s/step "
        f"{r['medswin_peak_mem_gb']:.2f} GB"
    )
    if "monai_step_s" in r:
        text += (
            f" | MONAI {r['monai_step_s']:6.2f} s/step {r['monai_peak_mem_gb']:.2f} GB | x{r['speedup_vs_monai']:.2f}, "
            f"mem x{r['mem_ratio_vs_monai']:.2f}"
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
