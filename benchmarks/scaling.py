"""How whole-volume inference time and memory grow with the volume, and the memory bound.

1. Swin UNETR (F=12, 14 classes, roi 96^3, overlap 0.5) over cubes of ``--sizes`` voxels per side,
   each in a fresh process (the same worker as ``inference_vs_monai.py``: medswin's engine, and MONAI
   with ``--impls``).  It fits the exponent ``p`` of ``time ~ voxels^p`` and also of
   ``windows ~ voxels^p``: MONAI's window layout (which the engine keeps, so results stay MONAI's)
   puts ``ceil((S - roi) / step) + 1`` windows per axis, so at sizes of a few rois the window count
   itself grows faster than the voxels; ``time ~ windows^p`` is then the engine's own scaling
   (1.0 = no overhead growing with the volume).  Memory per voxel: the peak above the baseline over
   the voxel count, and the slope of a straight-line fit of peak memory against voxels.
2. The memory bound: ``Predictor.predict_file`` on a synthetic CT of ``--memory-check`` voxels
   (default 512x512x300, int16 NIfTI at the btcv spacing so no resampling, 14 classes) must keep the
   worker's peak RSS under ``--memory-limit-gb`` (8) on the CPU: the predictor picks the streaming
   path by itself (the full float32 accumulator would exceed its 2 GiB budget), and only label slabs
   leave the rolling accumulator.  MONAI's inferer would allocate, for its output and count maps
   alone, ``(K + 1) x voxels x 4`` bytes (computed and printed, not run).

    python benchmarks/scaling.py                    # 128^3, 192^3, 256^3 + the 512x512x300 bound (~12 min, 2 threads)
    python benchmarks/scaling.py --quick            # 96^3, 144^3, 192^3 + the bound at overlap 0.25 (~4 min)
    python benchmarks/scaling.py --sizes 128,256 --impls medswin,monai_flash --no-memory-check
Writes ``benchmarks/results/scaling_<device tag>.json`` (``cpu-avx2``, ``cpu-amx``, ...; ``..._quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402

INFERENCE = str(Path(__file__).resolve().parent / "inference_vs_monai.py")


def memory_worker(a: argparse.Namespace) -> dict:
    """Predict one large CT file with the medswin predictor in this process; report time and peak RSS."""
    import nibabel as nib
    import torch

    from medswin.amp import resolve_amp
    from medswin.data.spec import get_dataset_spec
    from medswin.inference import Predictor
    from medswin.models import create_model

    _bench.set_threads(a.threads)
    spec = get_dataset_spec("btcv")
    torch.manual_seed(0)
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=spec.out_channels)
    predictor = Predictor(
        model,
        spec,
        roi_size=(96, 96, 96),
        overlap=a.overlap,
        amp=a.amp,
        device=a.device,
        memory_budget_gb=a.memory_budget_gb,
    )
    shape = _bench.parse_shape(a.volume)
    streams = predictor.engine().streams(shape, spec.out_channels)
    t0 = time.perf_counter()
    out = predictor.predict_file(a.image, a.labels_out)
    seconds = time.perf_counter() - t0
    seg = nib.load(str(out))
    return {
        "time_s": seconds,
        "peak_rss_gb": _bench.peak_rss_bytes() / 1e9,
        "streaming": streams,
        "windows": predictor.engine().plan(shape).num_windows,
        "output_shape": list(seg.shape),
        "output_dtype": str(seg.get_data_dtype()),
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[resolve_amp(a.amp, a.device)],
        "classes": spec.out_channels,
        "cuda_peak_gb": torch.cuda.max_memory_allocated() / 1e9 if a.device.startswith("cuda") else None,
    }


def write_ct(path: Path, shape: tuple[int, int, int]) -> Path:
    """A synthetic int16 CT (an elliptic body of soft tissue with two denser organs, noise) at the btcv spacing."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = np.ogrid[: shape[0], : shape[1]]
    cx, cy = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    body = ((x - cx) / (0.42 * shape[0])) ** 2 + ((y - cy) / (0.32 * shape[1])) ** 2 <= 1
    organ = ((x - 0.6 * shape[0]) / (0.12 * shape[0])) ** 2 + ((y - cy) / (0.1 * shape[1])) ** 2 <= 1
    vol = np.full(shape, -1000, dtype=np.int16)
    z0, z1 = shape[2] // 6, shape[2] - shape[2] // 6
    for z in range(shape[2]):
        vol[..., z][body] = 40
        if z0 <= z < z1:
            vol[..., z][organ] = 150
    vol += rng.integers(-25, 26, size=shape, dtype=np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([1.5, 1.5, 2.0, 1.0])), str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="128,192,256", help="cube sides (or DxHxW), at least 2")
    p.add_argument("--impls", default="medswin", help="medswin and optionally monai_flash / monai")
    p.add_argument(
        "--precision", default="auto", help="auto (medswin's default: bf16 where native), fp32 or bf16; both sides"
    )
    p.add_argument("--classes", type=int, default=14)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--memory-check", default="512x512x300", help="volume of the memory-bound run")
    p.add_argument("--no-memory-check", action="store_true")
    p.add_argument("--memory-limit-gb", type=float, default=8.0)
    p.add_argument(
        "--memory-budget-gb", type=float, default=2.0, help="the predictor's accumulator budget (its default)"
    )
    p.add_argument("--overlap", type=float, default=0.5, help="overlap of the memory-bound run")
    p.add_argument("--quick", action="store_true", help="96^3, 144^3, 192^3 and the bound at overlap 0.25")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", default=None)
    p.add_argument("--table", metavar="JSON", help="only print the tables of an earlier result")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--image", "--labels-out", "--volume", "--amp"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if _bench.worker_or_table(opts, memory_worker, markdown_table):
        return 0
    if opts.quick:
        opts.sizes, opts.overlap = "96,144,192", 0.25
    sizes = [_bench.parse_shape(s) for s in opts.sizes.split(",")]
    if len(sizes) < 2:
        p.error("--sizes needs at least 2 sizes to fit an exponent")
    impls = [i for i in opts.impls.split(",") if i]

    import torch
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    from medswin.amp import resolve_amp

    precision = {None: "fp32", torch.bfloat16: "bf16"}.get(resolve_amp(opts.precision, opts.device), "bf16")
    rows: dict[str, list[dict]] = {impl: [] for impl in impls}
    memory: dict | None = None
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        weights = os.path.join(tmp, "weights.pt")
        torch.save(MonaiSwinUNETR(in_channels=1, out_channels=opts.classes, feature_size=12).state_dict(), weights)
        for shape in sizes:
            vol = "x".join(map(str, shape))
            for impl in impls:
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
                    os.path.join(tmp, "labels.npy"),
                    "--classes",
                    str(opts.classes),
                    "--device",
                    opts.device,
                    "--threads",
                    str(opts.threads),
                ]
                r = _bench.run_worker(INFERENCE, args, timeout=opts.timeout)
                r.update(volume=vol, voxels=shape[0] * shape[1] * shape[2])
                rows[impl].append(r)
                print(
                    f"{impl:>11} {vol:>12}: {r['windows']:4d} windows {r['time_s']:8.1f} s  peak +{r['peak_mem_gb']:.2f} GB "
                    f"({r['peak_mem_gb'] * 1e9 / r['voxels']:.0f} B/voxel)",
                    flush=True,
                )
        fits = {impl: fit(rs) for impl, rs in rows.items()}
        if not opts.no_memory_check:
            shape = _bench.parse_shape(opts.memory_check)
            print(f"memory bound: writing a {'x'.join(map(str, shape))} CT ...", flush=True)
            image = write_ct(Path(tmp) / "ct.nii", shape)
            args = [
                "--image",
                str(image),
                "--labels-out",
                os.path.join(tmp, "ct_seg.nii.gz"),
                "--volume",
                opts.memory_check,
                "--overlap",
                str(opts.overlap),
                "--amp",
                opts.precision,
                "--device",
                opts.device,
                "--threads",
                str(opts.threads),
                "--memory-budget-gb",
                str(opts.memory_budget_gb),
            ]
            memory = _bench.run_worker(__file__, args, timeout=opts.timeout)
            voxels = shape[0] * shape[1] * shape[2]
            memory.update(
                volume=opts.memory_check,
                overlap=opts.overlap,
                limit_gb=opts.memory_limit_gb,
                budget_gb=opts.memory_budget_gb,
                passed=memory["peak_rss_gb"] < opts.memory_limit_gb,
                monai_output_and_count_gb=(memory["classes"] + 1) * voxels * 4 / 1e9,
            )
    result = {
        "benchmark": "scaling",
        **_bench.machine_info(opts.device),
        "precision": precision,
        "model": f"SwinUNETR F=12, 1 -> {opts.classes} channels",
        "roi": [96, 96, 96],
        "overlap": 0.5,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "rows": rows,
        "fits": fits,
        "memory_bound": memory,
    }
    path = _bench.write_json(result, opts.out or _bench.result_path("scaling", opts.device, opts.quick))
    print("\n" + markdown_table(result))
    print(f"\nwrote {path}")
    return 0 if memory is None or memory["passed"] else 1


def fit(rows: list[dict]) -> dict:
    """Exponents of time vs voxels, windows vs voxels and time vs windows; memory per voxel."""
    import numpy as np

    vox = [r["voxels"] for r in rows]
    mem = [r["peak_mem_gb"] * 1e9 for r in rows]
    return {
        "time_vs_voxels": _bench.fit_power(vox, [r["time_s"] for r in rows]),
        "windows_vs_voxels": _bench.fit_power(vox, [r["windows"] for r in rows]),
        "time_vs_windows": _bench.fit_power([r["windows"] for r in rows], [r["time_s"] for r in rows]),
        "bytes_per_voxel_at_largest": mem[-1] / vox[-1],
        "bytes_per_voxel_slope": float(np.polyfit(np.asarray(vox, float), np.asarray(mem, float), 1)[0])
        if len(set(vox)) > 1
        else float("nan"),
    }


def markdown_table(result: dict) -> str:
    """README tables: time and memory per size, the fitted exponents, the memory bound."""
    lines = [
        f"Measured {result['date']} on {result['device_name']} ({result['threads']} threads), torch {result['torch']}, "
        f"{result['model']}, roi 96^3, overlap 0.5, {result['precision']}.",
        "",
        "| implementation | volume | windows | time | peak memory (above baseline) | bytes / voxel |",
        "|---|---|---|---|---|---|",
    ]
    for impl, rows in result["rows"].items():
        for r in rows:
            lines.append(
                f"| {impl} | {r['volume']} | {r['windows']} | {r['time_s']:.1f} s | {r['peak_mem_gb']:.2f} GB "
                f"| {r['peak_mem_gb'] * 1e9 / r['voxels']:.0f} |"
            )
    lines += [
        "",
        "| implementation | time ~ voxels^p | windows ~ voxels^p (layout) | time ~ windows^p (engine) | memory slope (B/voxel) |",
        "|---|---|---|---|---|",
    ]
    for impl, f in result["fits"].items():
        lines.append(
            f"| {impl} | {f['time_vs_voxels']:.2f} | {f['windows_vs_voxels']:.2f} | **{f['time_vs_windows']:.2f}** "
            f"| {f['bytes_per_voxel_slope']:.0f} |"
        )
    m = result.get("memory_bound")
    if m:
        lines += [
            "",
            f"Memory bound: `Predictor.predict_file` on a {m['volume']} int16 CT ({m['classes']} classes, overlap {m['overlap']}, "
            f"{m['windows']} windows, {m['precision']}, streaming={m['streaming']}): peak RSS **{m['peak_rss_gb']:.2f} GB** "
            f"(limit {m['limit_gb']:.0f} GB: {'met' if m['passed'] else 'NOT met'}) in {m['time_s']:.0f} s; MONAI's inferer "
            f"would allocate {m['monai_output_and_count_gb']:.1f} GB for its float32 output and count maps alone.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
