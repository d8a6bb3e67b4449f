"""ONNX Runtime vs PyTorch eager: per-window latency and whole-volume prediction, and the export of every 3D preset.

Speed (each measurement in a fresh process, after two warm-up calls, median of ``--reps``): a seeded
``swin_unetr_tiny`` (14 classes, the BTCV head) exported with ``medswin.inference.onnx_export`` at the roi
(96^3), then

* ``torch_fp32`` / ``torch_bf16``: the eager model through ``ModelRunner`` (medswin's fused kernels;
  bf16 autocast only where the CPU has native bf16);
* ``ort_fp32``: the ONNX file through ``OnnxModel`` in ONNX Runtime's CPU provider (same thread count);

timing one window (batch 1), a batch of 2 windows, and a whole ``--volume`` through ``SlidingWindow.labels``
(overlap 0.5, Gaussian blending: what ``medswin predict`` runs).  The whole-volume label maps of ONNX Runtime
and PyTorch fp32 are compared (voxel agreement), and the logits of one window (max |difference|).  Memory:
peak RSS of the worker above its RSS after loading.

Exports (``--exports``): every registered 3D volume preset at its default roi (96^3), at full size, exported
and checked (ONNX Runtime vs eager, batch 2): seconds, file size, max |logit difference|.

    python benchmarks/onnx_runtime.py                      # speed at 96^3 + every preset's export (~10 min, 2 threads)
    python benchmarks/onnx_runtime.py --no-exports --reps 5
Writes ``benchmarks/results/onnx_runtime_<device tag>.json``.
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

IMPLS = ("torch_fp32", "torch_bf16", "ort_fp32")
MODEL = "swin_unetr_tiny"


def _spec(classes: int, roi: tuple[int, ...]):
    from medswin.data.spec import parse_spec

    labels = {"background": 0, **{f"class{i}": i for i in range(1, classes)}}
    entry = {
        "channel_names": ["CT"],
        "labels": labels,
        "file_ending": ".nii.gz",
        "target_spacing": [1.5, 1.5, 2.0],
        "normalization": {"type": "ct", "a_min": -175, "a_max": 250},
        "roi_size": list(roi),
    }
    return parse_spec("onnx-bench", entry, origin="benchmarks/onnx_runtime.py")


def worker(a: argparse.Namespace) -> dict:
    """One measurement in this process: a speed run of one implementation, or one preset's export."""
    import numpy as np
    import torch

    from medswin.inference import ModelRunner, SlidingWindow
    from medswin.inference.onnx_export import export_onnx
    from medswin.inference.onnx_runtime import OnnxModel
    from medswin.models import create_model

    _bench.set_threads(a.threads)
    roi = _bench.parse_shape(a.roi)
    if a.mode == "export":
        model = create_model(a.model, in_channels=1, out_channels=a.classes)
        start = time.perf_counter()
        done = export_onnx(model, _spec(a.classes, roi), roi, a.onnx, model_name=a.model)
        return {
            "model": a.model,
            "roi": list(roi),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "export_s": round(time.perf_counter() - start, 1),
            "file_mb": round(os.path.getsize(a.onnx) / 1e6, 1),
            "max_abs_diff": done.max_abs_diff,
            "max_abs_logit": done.max_abs_logit,
        }
    if a.impl == "ort_fp32":
        model = OnnxModel(a.onnx, threads=torch.get_num_threads())
        runner = ModelRunner(model, amp="fp32")
    else:
        torch.manual_seed(a.seed)
        model = create_model(MODEL, in_channels=1, out_channels=a.classes)
        model.load_state_dict(torch.load(a.weights, map_location="cpu", weights_only=True))
        runner = ModelRunner(model.eval(), amp="bf16" if a.impl == "torch_bf16" else "fp32")
    g = torch.Generator().manual_seed(a.seed)
    window = torch.randn(1, 1, *roi, generator=g)
    pair = torch.randn(2, 1, *roi, generator=g)
    volume = torch.randn(1, 1, *_bench.parse_shape(a.volume), generator=g)
    base = _bench.rss_bytes()
    out: dict = {"impl": a.impl}
    with torch.inference_mode():
        for name, x in (("window", window), ("batch2", pair)):
            for _ in range(2):
                logits = runner(x)
            times = []
            for _ in range(a.reps):
                start = time.perf_counter()
                logits = runner(x)
                times.append(time.perf_counter() - start)
            out[f"{name}_s"] = statistics.median(times)
            if name == "window":
                np.save(a.logits, logits.float().numpy())
        engine = SlidingWindow(roi, overlap=0.5)
        start = time.perf_counter()
        labels = engine.labels(runner, volume)
        out["volume_s"] = time.perf_counter() - start
        out["windows"] = engine.plan(volume.shape[2:]).num_windows
    np.save(a.labels, labels.numpy().astype(np.uint8))
    out["peak_mem_gb"] = (_bench.peak_rss_bytes() - base) / 1e9
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--roi", default="96")
    p.add_argument("--volume", default="160", help="whole-volume size: N (cube) or DxHxW")
    p.add_argument("--classes", type=int, default=14)
    p.add_argument("--threads", type=int, default=0, help="threads per worker, torch and ONNX Runtime (0 = default)")
    p.add_argument("--reps", type=int, default=5, help="timed calls per window measurement (median)")
    p.add_argument("--impls", default=None, help="default: torch_fp32, torch_bf16 where native, ort_fp32")
    p.add_argument("--no-exports", dest="exports", action="store_false", help="skip exporting every preset")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    p.add_argument("--out", help="result JSON (default: benchmarks/results/onnx_runtime_<device tag>.json)")
    p.add_argument("--table", metavar="JSON", help="only print the table of an earlier result")
    for hidden in ("--impl", "--mode", "--model", "--onnx", "--weights", "--logits", "--labels"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if _bench.worker_or_table(opts, worker, markdown_table):
        return 0
    run(opts)
    return 0


def run(opts: argparse.Namespace) -> dict:
    """Export the speed model, time each implementation in its own process, export every preset; write JSON."""
    import numpy as np
    import torch

    from medswin.inference.onnx_export import export_onnx
    from medswin.models import create_model, get_entry, list_models, model_kind

    _bench.set_threads(opts.threads)
    threads = str(opts.threads or torch.get_num_threads())
    roi = _bench.parse_shape(opts.roi)
    impls = opts.impls.split(",") if opts.impls else [i for i in IMPLS if i != "torch_bf16"]
    if not opts.impls and "bf16" in _bench.default_precisions("cpu"):
        impls.insert(1, "torch_bf16")
    common = ["--roi", opts.roi, "--volume", opts.volume, "--classes", str(opts.classes), "--threads", threads]
    result = {
        **_bench.machine_info("cpu"),
        "threads": int(threads),
        "model": MODEL,
        "roi": list(roi),
        "volume": list(_bench.parse_shape(opts.volume)),
        "classes": opts.classes,
        "reps": opts.reps,
        "onnxruntime": __import__("onnxruntime").__version__,
        "rows": [],
        "exports": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(opts.seed)
        model = create_model(MODEL, in_channels=1, out_channels=opts.classes).eval()
        weights, onnx_file = Path(tmp) / "w.pt", Path(tmp) / "model.onnx"
        torch.save(model.state_dict(), weights)
        done = export_onnx(model, _spec(opts.classes, roi), roi, onnx_file, model_name=MODEL)
        result["speed_model_export_s"] = round(done.seconds, 1)
        rows = {}
        for impl in impls:
            files = ["--logits", f"{tmp}/{impl}_logits.npy", "--labels", f"{tmp}/{impl}_labels.npy"]
            args = ["--impl", impl, "--onnx", str(onnx_file), "--weights", str(weights), "--reps", str(opts.reps)]
            rows[impl] = _bench.run_worker(__file__, [*common, *args, *files], opts.timeout)
            print(_format(rows[impl]), flush=True)
        reference = "torch_fp32"
        for impl, row in rows.items():
            if impl != reference and reference in rows:
                a, b = (np.load(f"{tmp}/{i}_logits.npy") for i in (impl, reference))
                row["max_abs_logit_diff_vs_torch_fp32"] = float(np.abs(a - b).max())
                la, lb = (np.load(f"{tmp}/{i}_labels.npy") for i in (impl, reference))
                row["agreement_vs_torch_fp32"] = _bench.dice_agreement(la, lb)
                for key in ("window_s", "batch2_s", "volume_s"):
                    row[f"{key[:-2]}_speedup_vs_torch_fp32"] = rows[reference][key] / row[key]
            result["rows"].append(row)
        if opts.exports:
            for name in [n for n in list_models() if model_kind(n) == "volume"]:
                roi_text = "x".join(map(str, get_entry(name).default_roi))
                args = ["--mode", "export", "--model", name, "--onnx", f"{tmp}/{name}.onnx", "--roi", roi_text]
                common_export = ["--classes", str(opts.classes), "--threads", threads]
                row = _bench.run_worker(__file__, [*common_export, *args], opts.timeout)
                print(f"export {name}: {row['export_s']} s, {row['file_mb']} MB, max diff {row['max_abs_diff']:.1e}")
                result["exports"].append(row)
    path = Path(opts.out) if opts.out else _bench.result_path("onnx_runtime", "cpu")
    print(_bench.write_json(result, path))
    print(markdown_table(result))
    return result


def _format(row: dict) -> str:
    return (
        f"{row['impl']}: window {row['window_s']:.3f} s, batch of 2 {row['batch2_s']:.3f} s, "
        f"volume {row['volume_s']:.1f} s ({row['windows']} windows), +{row['peak_mem_gb']:.2f} GB"
    )


def markdown_table(result: dict) -> str:
    """The README tables of a result JSON: latency per implementation, then every preset's export."""
    volume = "x".join(map(str, result["volume"]))
    lines = [
        f"Measured {result['date']} on {result['device_name']} ({result['threads']} threads), torch {result['torch']}, "
        f"ONNX Runtime {result['onnxruntime']}; {result['model']} ({result['classes']} classes), roi "
        f"{'x'.join(map(str, result['roi']))}; volume {volume} with overlap 0.5.",
        "",
        "| runtime | 1 window | 2 windows | volume | vs PyTorch fp32 (window / volume) | peak memory | max logit diff "
        "| labels agree |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"torch_fp32": "PyTorch eager fp32", "torch_bf16": "PyTorch eager bf16", "ort_fp32": "ONNX Runtime fp32"}
    for r in result["rows"]:
        speed = (
            f"{r['window_speedup_vs_torch_fp32']:.2f}x / {r['volume_speedup_vs_torch_fp32']:.2f}x"
            if "window_speedup_vs_torch_fp32" in r
            else "1x"
        )
        diff = f"{r['max_abs_logit_diff_vs_torch_fp32']:.1e}" if "max_abs_logit_diff_vs_torch_fp32" in r else "-"
        agree = (
            f"{100 * r['agreement_vs_torch_fp32']['voxel_agreement']:.3f} %" if "agreement_vs_torch_fp32" in r else "-"
        )
        lines.append(
            f"| {names[r['impl']]} | {r['window_s']:.3f} s | {r['batch2_s']:.3f} s | {r['volume_s']:.1f} s "
            f"({r['windows']} windows) | {speed} | +{r['peak_mem_gb']:.2f} GB | {diff} | {agree} |"
        )
    if result.get("exports"):
        lines += [
            "",
            "| preset (full size) | parameters | roi | export + check | file | max \\|ONNX Runtime - PyTorch\\| "
            "| max \\|logit\\| |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in result["exports"]:
            lines.append(
                f"| `{e['model']}` | {e['params_m']:.1f} M | {'x'.join(map(str, e['roi']))} | {e['export_s']:.0f} s "
                f"| {e['file_mb']:.0f} MB | {e['max_abs_diff']:.1e} | {e['max_abs_logit']:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
