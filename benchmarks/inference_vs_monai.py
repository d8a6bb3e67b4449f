"""Whole-volume sliding-window inference: medswin's engine vs MONAI's ``sliding_window_inference``.

Same weights (a seeded MONAI ``SwinUNETR``, loaded into medswin's ``SwinUNETR.from_monai``), same
seeded volume, same roi / overlap / Gaussian blending / sw_batch_size, same precision on both sides
(fp32, or bf16 autocast on both).  Per volume and precision it runs, each in a fresh process:

* ``monai``: MONAI ``SwinUNETR`` through ``sliding_window_inference(mode="gaussian")`` + argmax;
* ``monai_flash``: the same with ``use_flash_attention=True``;
* ``medswin``: :class:`medswin.inference.SlidingWindow` ``.labels`` over a ``ModelRunner`` (what
  ``Predictor`` and ``predict_labels`` run): MONAI's windows, logits blended straight into the
  accumulator, argmax without softmax, streamed in slabs past the memory budget.

All under ``torch.inference_mode``, after one warm-up window.  Time is the whole call (volume in,
label map out); memory is the peak RSS of the worker minus its RSS once the weights and the volume
are allocated, before the warm-up (CUDA: ``torch.cuda.max_memory_allocated`` above the allocation
at that point); ``peak_rss_gb`` in the JSON is the worker's absolute peak.  The label maps are compared
(mean Dice over the classes present; the check is >= 0.999 against MONAI at the same precision).
Ratios: MONAI time / medswin time (higher is better), medswin memory / MONAI memory (lower is better).

    python benchmarks/inference_vs_monai.py                     # 160^3 and 256x256x128, fp32 + bf16 (~15 min, 2 CPU threads)
    python benchmarks/inference_vs_monai.py --quick             # 160^3, MONAI+flash vs medswin (~3 min)
    python benchmarks/inference_vs_monai.py --volumes 160 --precisions fp32 --impls monai_flash,medswin
    python benchmarks/inference_vs_monai.py --device cuda --precisions bf16
Writes ``benchmarks/results/inference_vs_monai_<device tag>.json`` (``cpu-avx2``, ``cpu-amx``, ...; ``..._quick.json`` with ``--quick``).
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

IMPLS = ("monai", "monai_flash", "medswin")
IN_CHANNELS = 1


def worker(a: argparse.Namespace) -> dict:
    """One measurement in this process: build, warm up, run the whole volume, save the labels."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    from medswin.inference import ModelRunner, SlidingWindow
    from medswin.models import SwinUNETR

    _bench.set_threads(a.threads)
    device = torch.device(a.device)
    state = torch.load(a.weights, map_location="cpu", weights_only=True)
    if a.impl == "medswin":
        model = SwinUNETR.from_monai(state)
    else:
        model = MonaiSwinUNETR(
            in_channels=IN_CHANNELS,
            out_channels=a.classes,
            feature_size=a.feature_size,
            use_flash_attention=a.impl == "monai_flash",
        )
        model.load_state_dict(state)
    model.to(device).eval()
    shape = _bench.parse_shape(a.volume)
    roi = _bench.parse_shape(a.roi)
    x = torch.randn(1, IN_CHANNELS, *shape, generator=torch.Generator().manual_seed(a.seed)).to(device)
    bf16 = a.precision == "bf16"
    engine = SlidingWindow(roi, a.overlap, a.sw_batch_size, memory_budget_gb=a.memory_budget_gb)
    runner = ModelRunner(model, amp="bf16" if bf16 else "fp32", compile=a.compile) if a.impl == "medswin" else None

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run() -> torch.Tensor:
        if a.impl == "medswin":
            return engine.labels(runner, x)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = sliding_window_inference(x, roi, a.sw_batch_size, model, overlap=a.overlap, mode="gaussian")
            return logits.argmax(1)

    sync()
    base = _bench.rss_bytes()  # weights and input allocated: what the inference adds is measured above this
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):  # warm-up window
        model(torch.zeros(1, IN_CHANNELS, *roi, device=device))
    sync()
    times = []
    labels = None
    for _ in range(a.reps):
        t0 = time.perf_counter()
        labels = run()
        sync()
        times.append(time.perf_counter() - t0)
    assert labels is not None
    np.save(a.labels_out, labels[0].to(torch.uint8).cpu().numpy())
    out = {
        "time_s": statistics.median(times),
        "times_s": times,
        "peak_mem_gb": (_bench.peak_rss_bytes() - base) / 1e9,
        "peak_rss_gb": _bench.peak_rss_bytes() / 1e9,
        "windows": engine.plan(shape).num_windows,
    }
    if device.type == "cuda":
        out["peak_mem_gb"] = (torch.cuda.max_memory_allocated() - base_cuda) / 1e9
        out["peak_rss_delta_gb"] = (_bench.peak_rss_bytes() - base) / 1e9
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--volumes", default="160,256x256x128", help="comma-separated sizes: N (cube) or DxHxW")
    p.add_argument("--precisions", default=None, help="fp32,bf16 (default: bf16 too where the hardware has it)")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--roi", default="96")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--sw-batch-size", type=int, default=1)
    p.add_argument("--classes", type=int, default=14)
    p.add_argument("--feature-size", type=int, default=12, help="SwinUNETR F (12 = the tiny preset)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0 = torch's default)")
    p.add_argument("--reps", type=int, default=1, help="timed runs per measurement (median)")
    p.add_argument("--compile", action="store_true", help="medswin with torch.compile")
    p.add_argument("--memory-budget-gb", type=float, default=2.0, help="medswin's accumulator budget")
    p.add_argument("--quick", action="store_true", help="160^3 only, MONAI+flash vs medswin")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    p.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/inference_vs_monai_<device tag>.json)"
    )
    p.add_argument("--table", metavar="JSON", help="only print the tables of an earlier result")
    for hidden in ("--impl", "--precision", "--volume", "--weights", "--labels-out"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    opts.precisions = opts.precisions or _bench.default_precisions(opts.device)
    if _bench.worker_or_table(opts, worker, markdown_table):
        return 0
    if opts.quick:
        opts.volumes, opts.impls = "160", "monai_flash,medswin"
    impls = [i for i in opts.impls.split(",") if i]
    if "medswin" not in impls or any(i not in IMPLS for i in impls):
        p.error(f"--impls must include medswin and be among {IMPLS}")
    volumes = [_bench.parse_shape(v) for v in opts.volumes.split(",")]

    import numpy as np
    import torch
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    _bench.set_threads(opts.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        weights = os.path.join(tmp, "weights.pt")
        ref = MonaiSwinUNETR(in_channels=IN_CHANNELS, out_channels=opts.classes, feature_size=opts.feature_size)
        torch.save(ref.state_dict(), weights)
        for shape in volumes:
            vol = "x".join(map(str, shape))
            for precision in opts.precisions.split(","):
                res, labels = {}, {}
                for impl in impls:
                    out = os.path.join(tmp, f"{impl}.npy")
                    args = [
                        "--impl",
                        impl,
                        "--precision",
                        precision,
                        "--volume",
                        vol,
                        "--weights",
                        weights,
                        "--labels-out",
                        out,
                        "--roi",
                        opts.roi,
                        "--overlap",
                        str(opts.overlap),
                        "--sw-batch-size",
                        str(opts.sw_batch_size),
                        "--classes",
                        str(opts.classes),
                        "--feature-size",
                        str(opts.feature_size),
                        "--device",
                        opts.device,
                        "--threads",
                        str(opts.threads),
                        "--reps",
                        str(opts.reps),
                        "--seed",
                        "0",
                        "--memory-budget-gb",
                        str(opts.memory_budget_gb),
                    ] + (["--compile"] if opts.compile else [])
                    print(f"  {vol} {precision} {impl} ...", end="", flush=True)
                    res[impl] = _bench.run_worker(__file__, args, timeout=opts.timeout)
                    labels[impl] = np.load(out)
                    print(f" {res[impl]['time_s']:.1f} s, {res[impl]['peak_mem_gb']:.2f} GB", flush=True)
                row: dict = {"volume": vol, "precision": precision, "windows": res["medswin"]["windows"]}
                for impl, r in res.items():
                    row.update({f"{impl}_{k}": v for k, v in r.items() if k not in ("times_s", "windows")})
                for impl in impls:
                    if impl == "medswin":
                        continue
                    row[f"speedup_vs_{impl}"] = res[impl]["time_s"] / res["medswin"]["time_s"]
                    row[f"mem_ratio_vs_{impl}"] = res["medswin"]["peak_mem_gb"] / max(res[impl]["peak_mem_gb"], 1e-9)
                    row[f"agreement_vs_{impl}"] = _bench.dice_agreement(labels["medswin"], labels[impl])
                rows.append(row)
                print(_format_row(row), flush=True)
    result = {
        "benchmark": "inference_vs_monai",
        **_bench.machine_info(opts.device),
        "model": f"SwinUNETR F={opts.feature_size}, {IN_CHANNELS} -> {opts.classes} channels (seeded random weights)",
        "roi": list(_bench.parse_shape(opts.roi)),
        "overlap": opts.overlap,
        "sw_batch_size": opts.sw_batch_size,
        "compile": opts.compile,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "rows": rows,
    }
    path = _bench.write_json(result, opts.out or _bench.result_path("inference_vs_monai", opts.device, opts.quick))
    print("\n" + markdown_table(result))
    print(f"\nwrote {path}")
    return 0


def markdown_table(result: dict) -> str:
    """The README table of a result JSON (times, peak memory above the baseline, ratios, label agreement)."""
    lines = [
        f"Measured {result['date']} on {result['device_name']} ({result['threads']} threads), torch {result['torch']}, "
        f"MONAI {result['monai']}; {result['model']}, roi {'x'.join(map(str, result['roi']))}, overlap {result['overlap']}, "
        f"sw_batch_size {result['sw_batch_size']}.",
        "",
        "| volume | windows | precision | MONAI | MONAI+flash | medswin | vs flash | vs MONAI | peak memory medswin / flash / MONAI "
        "| Dice vs flash | Dice vs MONAI |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row: dict, key: str, fmt: str) -> str:
        return fmt.format(row[key]) if key in row else "-"

    for r in result["rows"]:
        mem = " / ".join(cell(r, f"{i}_peak_mem_gb", "{:.2f}") for i in ("medswin", "monai_flash", "monai")) + " GB"
        lines.append(
            f"| {r['volume']} | {r['windows']} | {r['precision']} | {cell(r, 'monai_time_s', '{:.1f} s')} "
            f"| {cell(r, 'monai_flash_time_s', '{:.1f} s')} | {r['medswin_time_s']:.1f} s "
            f"| **{cell(r, 'speedup_vs_monai_flash', '{:.2f}x')}** | {cell(r, 'speedup_vs_monai', '{:.2f}x')} | {mem} "
            f"| {_dice(r, 'monai_flash')} | {_dice(r, 'monai')} |"
        )
    return "\n".join(lines)


def _dice(row: dict, impl: str) -> str:
    agreement = row.get(f"agreement_vs_{impl}")
    return f"{agreement['mean_dice']:.4f}" if agreement else "-"


def _format_row(r: dict) -> str:
    parts = [
        f"{r['volume']} {r['precision']} ({r['windows']} windows) | medswin {r['medswin_time_s']:.1f} s {r['medswin_peak_mem_gb']:.2f} GB"
    ]
    for impl in ("monai_flash", "monai"):
        if f"{impl}_time_s" in r:
            parts.append(
                f"{impl} {r[f'{impl}_time_s']:.1f} s {r[f'{impl}_peak_mem_gb']:.2f} GB -> x{r[f'speedup_vs_{impl}']:.2f}, "
                f"mem x{r[f'mem_ratio_vs_{impl}']:.2f}, Dice {r[f'agreement_vs_{impl}']['mean_dice']:.4f}"
            )
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
