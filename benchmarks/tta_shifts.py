"""Test-time adaptation under measured domain shifts of the demo task's held-out volume.

The demo model (``swin_unetr_tiny`` trained 5 minutes on the inferior slab of the MNI template,
``benchmarks/demo_vs_monai_unet.py``) predicts the held-out superior slab after a seeded shift of
its intensities or resolution, with four methods: no adaptation, mirror averaging (the 8 flips),
TENT and ETTA (episodic: each shifted volume starts from the trained weights).  Dice per tissue
(CSF, GM, WM) and their mean are printed as a shift x method table and written to
``benchmarks/results/tta_shifts.json``.

    python benchmarks/tta_shifts.py                       # every shift and method (~10 min, 2 CPU threads)
    python benchmarks/tta_shifts.py --shifts gamma --methods none,etta

Shifts (on the raw T1 intensities, before the predictor's nonzero z-score; the template is skull-
stripped, so voxels outside the brain are kept at exactly 0 -- the predictor's scan mask):

* ``clean``: none;
* ``bias_field``: MONAI ``RandBiasField`` (degree 3, coefficients in +-0.5, seeded);
* ``gamma``: MONAI ``AdjustContrast`` (gamma 2.5; a z-score cannot undo it);
* ``noise``: MONAI ``RandGaussianNoise`` inside the brain, std 0.25 x the brain's intensity std (seeded);
* ``resolution``: MONAI ``Resize`` to half the voxels per axis (area) and back (trilinear).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medswin.adaptation import Etta, Tent  # noqa: E402
from medswin.data.demo import build_mni_tissue  # noqa: E402
from medswin.data.io import load_volume, write_nifti  # noqa: E402
from medswin.evaluation.metrics import case_metrics  # noqa: E402
from medswin.inference import Predictor  # noqa: E402

SHIFTS = ("clean", "bias_field", "gamma", "noise", "resolution")
METHODS = ("none", "mirror", "tent", "etta")


def apply_shift(name: str, image: np.ndarray, seed: int) -> np.ndarray:
    """The shifted copy of a ``(1, X, Y, Z)`` float image (outside-brain zeros kept at zero)."""
    from monai.transforms import AdjustContrast, RandBiasField, RandGaussianNoise, Resize

    brain = image != 0
    x = torch.from_numpy(image.astype(np.float32))
    if name == "clean":
        out = x
    elif name == "bias_field":
        t = RandBiasField(degree=3, coeff_range=(-0.5, 0.5), prob=1.0)
        t.set_random_state(seed)
        out = torch.as_tensor(t(x))
    elif name == "gamma":
        out = torch.as_tensor(AdjustContrast(gamma=2.5)(x))
    elif name == "noise":
        t = RandGaussianNoise(prob=1.0, mean=0.0, std=0.25 * float(image[brain].std()))
        t.set_random_state(seed)
        out = torch.as_tensor(t(x))
    elif name == "resolution":
        size = image.shape[1:]
        half = Resize([max(1, s // 2) for s in size], mode="area")(x)
        out = torch.as_tensor(Resize(list(size), mode="trilinear")(half))
    else:
        raise ValueError(f"unknown shift {name!r}; choose from {SHIFTS}")
    out = out.numpy().astype(np.float32)
    out[~brain] = 0
    return out


def build_predictor(method: str, checkpoint: Path, args: argparse.Namespace) -> Predictor:
    """A predictor for one method (a fresh copy of the trained model each)."""
    predictor = Predictor.from_checkpoint(checkpoint, amp=args.amp, mirror=method == "mirror")
    if method == "tent":
        adapter = Tent(predictor.model, steps=args.tent_steps, lr=args.tent_lr, max_patches=args.tent_patches)
        predictor.attach_adapter(adapter)
    elif method == "etta":
        adapter = Etta(
            predictor.model,
            steps=args.etta_steps,
            lr=args.etta_lr,
            entropy_filter=args.etta_filter,
            optimizer=args.etta_optimizer,
        )
        predictor.attach_adapter(adapter)
    return predictor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "benchmarks/results/demo_runs/medswin/checkpoint_best.pt"))
    p.add_argument("--work", default=str(ROOT / "benchmarks/results/demo_runs"), help="scratch: data, shifted volumes")
    p.add_argument("--shifts", default=",".join(SHIFTS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--tent-steps", type=int, default=3)
    p.add_argument("--tent-lr", type=float, default=1e-4)
    p.add_argument("--tent-patches", type=int, default=8)
    p.add_argument("--etta-steps", type=int, default=3)
    p.add_argument("--etta-lr", type=float, default=0.01)
    p.add_argument("--etta-optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--etta-filter", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/tta_shifts.json"))
    args = p.parse_args(argv)
    shifts, methods = args.shifts.split(","), args.methods.split(",")
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {METHODS}")

    work = Path(args.work)
    data = work / "data" / "mni-tissue-2mm"
    if not (data / "dataset.json").is_file():
        build_mni_tissue(work / "data")
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise SystemExit(
            f"{checkpoint}: no trained demo checkpoint (run benchmarks/demo_vs_monai_unet.py --models medswin)"
        )
    image = load_volume(data / "imagesTs" / "mni_superior.nii.gz")
    gt = load_volume(data / "labelsTs" / "mni_superior.nii.gz")
    predictors = {m: build_predictor(m, checkpoint, args) for m in methods}
    classes = {k: v for k, v in predictors[methods[0]].spec.labels.items() if v != 0}

    settings = {
        "tent": {"steps": args.tent_steps, "lr": args.tent_lr, "optimizer": "adam", "max_patches": args.tent_patches},
        "etta": {
            "steps": args.etta_steps,
            "lr": args.etta_lr,
            "optimizer": args.etta_optimizer,
            "momentum": 0.9,
            "entropy_filter": args.etta_filter,
            "max_patches": None,
        },
        "episodic": True,
        "amp": args.amp,
        "seed": args.seed,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    same = previous.get("settings") == settings and previous.get("checkpoint") == str(checkpoint)
    results: dict[str, dict[str, dict]] = previous.get("results", {}) if same else {}  # reruns replace their shifts
    for shift in shifts:
        shifted = apply_shift(shift, image.array, args.seed)
        path = write_nifti(shifted[0], image.affine, work / "tta_shifts" / f"mni_superior_{shift}.nii.gz")
        results[shift] = {m: v for m, v in results.get(shift, {}).items() if m not in methods}
        for method in methods:
            t0 = time.perf_counter()
            pred = predictors[method].predict(path)
            seconds = time.perf_counter() - t0
            metrics = case_metrics(pred.labels, gt.array[0], gt.spacing, classes=classes)
            dice = {name: round(float(m["dice"]), 4) for name, m in metrics.items()}
            entry = {
                "mean_dice": round(float(np.mean(list(dice.values()))), 4),
                "dice": dice,
                "hd95": {name: round(float(m["hd95"]), 2) for name, m in metrics.items()},
                "seconds": round(seconds, 1),
            }
            adapter = predictors[method].adapter
            if adapter is not None:
                entry["adaptation_losses"] = [round(v, 4) for v in adapter.last_report.losses]
            results[shift][method] = entry
            print(
                f"{shift:>11} {method:>6}: mean Dice {entry['mean_dice']:.4f} "
                f"({', '.join(f'{k} {v:.3f}' for k, v in dice.items())}) in {seconds:.0f} s",
                flush=True,
            )
        record = {
            "benchmark": "tta_shifts",
            "checkpoint": str(checkpoint),
            "settings": settings,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "results": results,
        }
        out.write_text(json.dumps(record, indent=2))  # rewritten after each shift

    columns = [m for m in METHODS if any(m in r for r in results.values())]
    print("\n| shift | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for shift, row in results.items():
        print(f"| {shift} | " + " | ".join(f"{row[m]['mean_dice']:.4f}" if m in row else "-" for m in columns) + " |")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
