"""medswin Swin UNETR vs MONAI SwinUNETR: same configuration, same weights, same input.

For every (preset, input size, precision) it measures, each in a fresh subprocess so peak memory
is not polluted by the other runs:

* forward under ``torch.inference_mode`` (MONAI default path and ``use_flash_attention=True``);
* forward + backward in training mode (MONAI's flash flag only acts without grad, so MONAI has one
  training row);
* peak memory: CPU = peak RSS of the worker minus its RSS before the first forward (weights and
  input already allocated); CUDA = ``torch.cuda.max_memory_allocated`` minus the allocation before.

Precisions are compared like for like (fp32 vs fp32, bf16 autocast vs bf16 autocast).  Prints a
table with ratios (MONAI time / medswin time, medswin memory / MONAI memory) and writes JSON to
``benchmarks/results/swin_unetr_vs_monai_<device tag>.json`` (``cpu-avx2``, ``cpu-amx``, ...: see ``_bench.device_tag``).

    python benchmarks/swin_unetr_vs_monai.py                       # tiny+base, 64^3+96^3, fp32+bf16
    python benchmarks/swin_unetr_vs_monai.py --presets tiny --sizes 64 --precisions fp32 --reps 2
    python benchmarks/swin_unetr_vs_monai.py --device cuda --precisions bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = {"tiny": 12, "small": 24, "base": 48}
IN_CHANNELS, OUT_CHANNELS = 1, 14
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(RESULTS.parent))

import _bench  # noqa: E402


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(args: argparse.Namespace) -> dict:
    """Run one measurement in this process and return it (called in a subprocess)."""
    import torch
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    from medswin.models import SwinUNETR

    torch.manual_seed(0)
    device = torch.device(args.device)
    state = torch.load(args.weights, map_location="cpu", weights_only=True)
    if args.impl == "medswin":
        model = SwinUNETR.from_monai(state)
    else:
        model = MonaiSwinUNETR(
            in_channels=IN_CHANNELS,
            out_channels=OUT_CHANNELS,
            feature_size=FEATURES[args.preset],
            use_flash_attention=args.impl == "monai_flash",
        )
        model.load_state_dict(state)
    model.to(device)
    x = torch.randn(1, IN_CHANNELS, args.size, args.size, args.size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> None:
        if args.mode == "forward":
            model.eval()
            with torch.inference_mode(), autocast:
                model(x)
        else:
            model.train()
            model.zero_grad(set_to_none=True)
            with autocast:
                loss = model(x).float().mean()
            loss.backward()
        sync()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    times = []
    for i in range(args.warmup + args.reps):
        t0 = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss_bytes()) - base
    return {"time_s": statistics.median(times), "times_s": times, "peak_mem_gb": peak / 1e9}


def run_one(weights: str, impl: str, preset: str, size: int, precision: str, mode: str, opts) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--weights",
        weights,
        "--impl",
        impl,
        "--preset",
        preset,
        "--size",
        str(size),
        "--precision",
        precision,
        "--mode",
        mode,
        "--device",
        opts.device,
        "--reps",
        str(opts.reps),
        "--warmup",
        str(opts.warmup),
    ]
    env = dict(
        os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"worker failed ({impl} {preset} {size} {precision} {mode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,base")
    p.add_argument("--sizes", default="64,96")
    p.add_argument("--precisions", default=None, help="fp32,bf16 (default: bf16 too where the hardware has it)")
    p.add_argument("--modes", default="forward,train")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/swin_unetr_vs_monai_<device tag>.json)"
    )
    p.add_argument("--table", metavar="JSON", help="only print the markdown table of an earlier result")
    # worker mode
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    opts.precisions = opts.precisions or _bench.default_precisions(opts.device)
    if _bench.worker_or_table(opts, worker, markdown_table):
        return 0

    import torch
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in opts.presets.split(","):
            torch.manual_seed(0)
            weights = os.path.join(tmp, f"{preset}.pt")
            ref = MonaiSwinUNETR(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, feature_size=FEATURES[preset])
            torch.save(ref.state_dict(), weights)
            for size in map(int, opts.sizes.split(",")):
                for precision in opts.precisions.split(","):
                    for mode in opts.modes.split(","):
                        impls = ["monai", "monai_flash", "medswin"] if mode == "forward" else ["monai", "medswin"]
                        res = {impl: run_one(weights, impl, preset, size, precision, mode, opts) for impl in impls}
                        row = {
                            "preset": preset,
                            "size": size,
                            "precision": precision,
                            "mode": mode,
                            **{f"{impl}_{k}": v for impl, r in res.items() for k, v in r.items() if k != "times_s"},
                        }
                        baseline = "monai_flash" if mode == "forward" else "monai"
                        row["speedup_vs_monai"] = res["monai"]["time_s"] / res["medswin"]["time_s"]
                        row[f"speedup_vs_{baseline}"] = res[baseline]["time_s"] / res["medswin"]["time_s"]
                        row["mem_ratio_vs_monai"] = res["medswin"]["peak_mem_gb"] / max(
                            res["monai"]["peak_mem_gb"], 1e-9
                        )
                        rows.append(row)
                        print(_format_row(row), flush=True)
    result = {
        "benchmark": "swin_unetr_vs_monai",
        **_bench.machine_info(opts.device),
        "in_channels": IN_CHANNELS,
        "out_channels": OUT_CHANNELS,
        "rows": rows,
    }
    out = _bench.write_json(result, opts.out or _bench.result_path("swin_unetr_vs_monai", opts.device))
    print("\n" + markdown_table(result))
    print(f"\nwrote {out}")
    return 0


def markdown_table(result: dict) -> str:
    """The README's performance table for a result JSON."""
    lines = [
        f"Measured on {result['device_name']} ({result['threads']} threads), torch {result['torch']}, MONAI {result['monai']}.",
        "",
        "| preset | input | precision | MONAI fwd | MONAI+flash fwd | medswin fwd | vs flash | MONAI train | medswin train "
        "| train speed-up | train memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {(r["preset"], r["size"], r["precision"], r["mode"]): r for r in result["rows"]}
    for (preset, size, precision, mode), fwd in rows.items():
        if mode != "forward" or (preset, size, precision, "train") not in rows:
            continue
        tr = rows[(preset, size, precision, "train")]
        lines.append(
            f"| {preset} | {size}^3 | {precision} | {fwd['monai_time_s']:.2f} s | {fwd['monai_flash_time_s']:.2f} s "
            f"| {fwd['medswin_time_s']:.2f} s | **{fwd['speedup_vs_monai_flash']:.2f}x** | {tr['monai_time_s']:.2f} s "
            f"| {tr['medswin_time_s']:.2f} s | **{tr['speedup_vs_monai']:.2f}x** | {tr['medswin_peak_mem_gb']:.2f} / "
            f"{tr['monai_peak_mem_gb']:.2f} GB (**{tr['mem_ratio_vs_monai']:.2f}x**) |"
        )
    return "\n".join(lines)


def _format_row(r: dict) -> str:
    head = f"{r['preset']:>5} {r['size']:>3}^3 {r['precision']:>4} {r['mode']:>7} |"
    if r["mode"] == "forward":
        return (
            f"{head} MONAI {r['monai_time_s']:7.3f}s  MONAI+flash {r['monai_flash_time_s']:7.3f}s  "
            f"medswin {r['medswin_time_s']:7.3f}s | x{r['speedup_vs_monai']:.2f} vs MONAI, "
            f"x{r['speedup_vs_monai_flash']:.2f} vs flash | mem {r['medswin_peak_mem_gb']:.2f} / "
            f"{r['monai_peak_mem_gb']:.2f} GB ({r['mem_ratio_vs_monai']:.2f}x)"
        )
    return (
        f"{head} MONAI {r['monai_time_s']:7.3f}s  medswin {r['medswin_time_s']:7.3f}s | "
        f"x{r['speedup_vs_monai']:.2f} | mem {r['medswin_peak_mem_gb']:.2f} / {r['monai_peak_mem_gb']:.2f} GB "
        f"({r['mem_ratio_vs_monai']:.2f}x)"
    )


if __name__ == "__main__":
    sys.exit(main())
