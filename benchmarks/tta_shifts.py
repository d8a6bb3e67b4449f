"""Test-time adaptation under measured domain shifts of the demo task's held-out volume: an oracle bound,
entropy / consistency / self-training adapters, and the classical input-side corrections.

The demo model (``swin_unetr_tiny`` trained by ``medswin demo``, 5 minutes on the inferior slab of the MNI
template) predicts the held-out superior slab after a seeded shift of its raw intensities or resolution.

Protocol (issue 19):

* **oracle** (JSON key ``oracle``): on each shifted volume, fine-tune one parameter set with the TRUE labels
  (DiceCE, Adam, ``--oracle-steps`` steps of 8 windows, the better of two learning rates per set -- an oracle
  may pick: 1e-3 / 1e-2 for the norm sets, 1e-4 / 1e-3 for the decoder and the whole model)
  and score the prediction: encoder norm affines, every norm affine, those plus every bias, the decoder
  (everything outside ``model.encoder``), the whole model.  It says which parameters can carry a shift at all and bounds every unsupervised method.
* **methods**: none, mirror (flip averaging), TENT, ETTA, MEMO (marginal entropy over flips), pseudo-label
  (confidence-thresholded self-training), and the input-side corrections N4 (SimpleITK) and histogram
  matching to the TRAINING slab's foreground quantiles.
* **tuning**: each adaptive method's learning rate (and step count) is chosen on ONE shift (``--tune-on``,
  gamma) from a small grid (JSON key ``tuning``), then frozen for every other shift and the clean volume.
  Episodic (each volume starts from the trained weights); Dice per tissue and its mean, seconds per volume;
  the seeded shifts (bias field, noise) run with ``--seeds`` seeds and report the mean.

    python benchmarks/tta_shifts.py --checkpoint demo_output/run/checkpoint_last.pt     # ~20 min, 2 threads
    python benchmarks/tta_shifts.py --checkpoint C --shifts gamma --methods none,n4 --stages methods
    python benchmarks/tta_shifts.py --checkpoint C --stages oracle     # add the oracle to the existing JSON

Shifts (on the raw T1 intensities, before the predictor's nonzero z-score; the template is skull-stripped,
so voxels outside the brain are kept at exactly 0 -- the predictor's scan mask):

* ``clean``: none;
* ``bias_field``: MONAI ``RandBiasField`` (degree 3, coefficients in +-0.5, seeded);
* ``gamma``: MONAI ``AdjustContrast`` (gamma 2.5; a z-score cannot undo it);
* ``noise``: MONAI ``RandGaussianNoise`` inside the brain, std 0.25 x the brain's intensity std (seeded);
* ``resolution``: MONAI ``Resize`` to half the voxels per axis (area) and back (trilinear).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _bench  # noqa: E402
from medswin.adaptation import Etta, Memo, PseudoLabel, Tent  # noqa: E402
from medswin.adaptation.base import EntropyAdapter  # noqa: E402
from medswin.data.correction import InputCorrection, histogram_landmarks, n4_correct  # noqa: E402
from medswin.data.demo import build_mni_tissue  # noqa: E402
from medswin.data.io import load_volume, write_nifti  # noqa: E402
from medswin.evaluation.metrics import case_metrics  # noqa: E402
from medswin.inference import Predictor  # noqa: E402
from medswin.inference.sliding_window import WindowPlan  # noqa: E402

SHIFTS = ("clean", "bias_field", "gamma", "noise", "resolution")
SEEDED_SHIFTS = ("bias_field", "noise")
METHODS = ("none", "mirror", "tent", "etta", "memo", "pseudo-label", "n4", "histmatch", "n4+histmatch")
ADAPTERS = {"tent": Tent, "etta": Etta, "memo": Memo, "pseudo-label": PseudoLabel}
ORACLE_PARAMS = ("encoder-norms", "norms", "norms-biases", "decoder", "all")
# the oracle's learning rates per parameter set (the better one is reported): a few affines take large steps,
# millions of weights of a trained model small ones
ORACLE_LRS = {"encoder-norms": (1e-3, 1e-2), "norms": (1e-3, 1e-2), "norms-biases": (1e-3, 1e-2)}
ORACLE_LRS.update({"decoder": (1e-4, 1e-3), "all": (1e-4, 1e-3)})
# the tuning grid (on --tune-on): learning rates x steps; the other settings are each method's defaults
GRID = {
    "tent": [{"lr": lr, "steps": s} for lr in (1e-4, 1e-3, 1e-2) for s in (3,)],
    "etta": [{"lr": lr, "steps": s} for lr in (1e-2, 1e-1) for s in (3,)],
    "memo": [{"lr": lr, "steps": s} for lr in (1e-4, 1e-3, 1e-2) for s in (1, 3)],
    "pseudo-label": [{"lr": lr, "steps": s} for lr in (1e-3, 1e-2) for s in (3, 10)],
}


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
    out[brain] = np.maximum(out[brain], 1e-3)  # inside the brain stays nonzero (and >= 0 for N4)
    return out


class Oracle(EntropyAdapter):
    """Supervised fine-tuning with the TRUE labels of the volume (an upper bound, not a method).

    Args:
        model: the trained model.
        params: one of ``ORACLE_PARAMS``.
        steps, lr, max_patches: Adam steps, learning rate, windows per step.
    """

    method = "oracle"

    def __init__(self, model: torch.nn.Module, params: str, steps: int = 10, lr: float = 1e-3, max_patches: int = 8):
        from monai.losses import MaskedDiceLoss

        super().__init__(model, steps=steps, lr=lr, optimizer="adam", params=params, max_patches=max_patches)
        self.label: torch.Tensor | None = None  # (1, 1, D, H, W) class indices on the predictor's grid
        self.dice = MaskedDiceLoss(to_onehot_y=True, softmax=True)

    def _step(
        self, image: torch.Tensor, plan: WindowPlan, counted: torch.Tensor, generator: torch.Generator
    ) -> tuple[float, int]:
        if self.label is None or tuple(self.label.shape[2:]) != tuple(image.shape[2:]):
            raise ValueError("set Oracle.label to the volume's labels on the predictor's grid first")
        label = F.pad(self.label.float(), plan.pad)
        region = (slice(None), slice(None))
        windows = self._choose([sl for sl in plan.slices if counted[(*region, *sl)].any()], generator)
        padded, runner, total = plan.pad_image(image), self._runner(), 0.0
        for group in self._batches(windows, "oracle windows"):
            # DiceCE over the voxels that count (inside the scan): outside, the predictor writes background
            # whatever the model says, so the loss must not spend the steps there
            out = self._forward(runner, padded, group)
            target = torch.cat([label[(*region, *sl)] for sl in group]).to(out.device)
            mask = torch.cat([counted[(*region, *sl)] for sl in group]).to(out.device, torch.float32)
            ce = (F.cross_entropy(out, target[:, 0].long(), reduction="none") * mask[:, 0]).sum() / mask.sum()
            loss = (ce + self.dice(out, target, mask=mask)) * len(group) / len(windows)
            loss.backward()
            total += float(loss.detach())
        self._optimizer_step()
        return total, len(windows)


def oracle_labels(predictor: Predictor, image_path: Path, label_path: Path) -> torch.Tensor:
    """The labels ``(1, 1, D, H, W)`` on the grid the predictor feeds the model (the val pipeline)."""
    from medswin.data.transforms import val_transforms

    data = val_transforms(predictor.spec)({"image": str(image_path), "label": str(label_path)})
    return torch.as_tensor(data["label"]).long()[None]


def score(labels: np.ndarray, gt, classes: dict) -> dict:
    """Dice per tissue, their mean, HD95."""
    metrics = case_metrics(labels, gt.array[0], gt.spacing, classes=classes)
    dice = {name: round(float(m["dice"]), 4) for name, m in metrics.items()}
    return {
        "mean_dice": round(float(np.mean(list(dice.values()))), 4),
        "dice": dice,
        "hd95": {name: round(float(m["hd95"]), 2) for name, m in metrics.items()},
    }


def make_predictor(method: str, checkpoint: Path, settings: dict, reference: dict, amp: str) -> Predictor:
    """A predictor for one method (a fresh copy of the trained model) with ``settings`` for its adapter."""
    correction = None
    if method == "n4":
        correction = InputCorrection("n4")
    elif method.endswith("histmatch"):
        correction = InputCorrection(method, reference[method])
    predictor = Predictor.from_checkpoint(checkpoint, amp=amp, mirror=method == "mirror", correction=correction)
    if method in ADAPTERS:
        predictor.attach_adapter(ADAPTERS[method](predictor.model, **settings))
    return predictor


def run_method(predictor: Predictor, path: Path, gt, classes: dict) -> dict:
    """Predict (adapting first if the predictor has an adapter), score and time one shifted volume."""
    t0 = time.perf_counter()
    pred = predictor.predict(path)
    entry = {**score(pred.labels, gt, classes), "seconds": round(time.perf_counter() - t0, 1)}
    if predictor.adapter is not None:
        entry["adaptation_losses"] = [round(v, 4) for v in predictor.adapter.last_report.losses]
    return entry


def mean_over_seeds(entries: list[dict]) -> dict:
    """One entry: the mean Dice per tissue / overall / seconds over seeds (the per-seed means kept)."""
    if len(entries) == 1:
        return entries[0]
    dice = {k: round(float(np.mean([e["dice"][k] for e in entries])), 4) for k in entries[0]["dice"]}
    return {
        "mean_dice": round(float(np.mean([e["mean_dice"] for e in entries])), 4),
        "dice": dice,
        "seconds": round(float(np.mean([e["seconds"] for e in entries])), 1),
        "per_seed_mean_dice": [e["mean_dice"] for e in entries],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="demo_output/run/checkpoint_last.pt", help="a trained demo checkpoint")
    p.add_argument("--work", default=str(ROOT / "benchmarks/results/tta_work"), help="scratch: data, shifted volumes")
    p.add_argument("--shifts", default=",".join(SHIFTS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--seeds", default="0,1,2", help="seeds of the seeded shifts (bias field, noise)")
    p.add_argument("--tune-on", default="gamma", help="the shift the adaptive methods' settings are chosen on")
    p.add_argument(
        "--stages",
        default="tune,methods,oracle",
        help="which stages run; the others are kept from the existing JSON (tune: the grid on --tune-on; "
        "methods: every method on every shift with the tuned settings; oracle)",
    )
    p.add_argument("--oracle-steps", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/tta_shifts.json"))
    args = p.parse_args(argv)
    shifts, methods = args.shifts.split(","), args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {METHODS}")

    work = Path(args.work)
    data = work / "data" / "mni-tissue-2mm"
    if not (data / "dataset.json").is_file():
        build_mni_tissue(work / "data")
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint}: no trained demo checkpoint (run `medswin demo` first)")
    image = load_volume(data / "imagesTs" / "mni_superior.nii.gz")
    gt = load_volume(data / "labelsTs" / "mni_superior.nii.gz")
    gt_path = data / "labelsTs" / "mni_superior.nii.gz"
    training = load_volume(data / "imagesTr" / "mni_inferior.nii.gz").array
    reference = {  # the training slab's landmarks, as it is and N4-corrected (for n4+histmatch)
        "histmatch": histogram_landmarks(training),
        "n4+histmatch": histogram_landmarks(n4_correct(training)),
    }
    probe = Predictor.from_checkpoint(checkpoint, amp=args.amp)
    classes = {k: v for k, v in probe.spec.labels.items() if v != 0}

    def shifted(shift: str, seed: int) -> Path:
        path = work / "tta_shifts" / f"mni_superior_{shift}_{seed}.nii.gz"
        if not path.is_file():
            write_nifti(apply_shift(shift, image.array, seed)[0], image.affine, path)
        return path

    stages = set(args.stages.split(","))
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    record: dict = {
        **previous,
        "benchmark": "tta_shifts",
        "checkpoint": str(checkpoint),
        "cpu_model": _bench.cpu_name(),
        "threads": torch.get_num_threads(),
        "amp": args.amp,
        "seeds": seeds,
        "protocol": "episodic; adaptive methods tuned on one shift (tuning), then frozen for all shifts",
    }

    def save() -> None:
        _bench.write_json(record, out)

    # 1. tuning on one shift
    chosen: dict[str, dict] = {m: {} for m in ADAPTERS}
    chosen.update(previous.get("settings", {}))
    if "tune" in stages:
        record["tuning"] = {"shift": args.tune_on, "grid": {}, "chosen": {}}
        path = shifted(args.tune_on, seeds[0])
        for method in [m for m in methods if m in ADAPTERS]:
            rows = []
            for settings in GRID[method]:
                entry = run_method(make_predictor(method, checkpoint, settings, reference, args.amp), path, gt, classes)
                rows.append({"settings": settings, "mean_dice": entry["mean_dice"], "seconds": entry["seconds"]})
                print(f"tune {method:>12} {settings}: {entry['mean_dice']:.4f} ({entry['seconds']:.0f} s)", flush=True)
            best = max(rows, key=lambda r: r["mean_dice"])
            chosen[method] = best["settings"]
            record["tuning"]["grid"][method] = rows
            record["tuning"]["chosen"][method] = best["settings"]
            save()

    # 2. every method on every shift, settings frozen
    record["settings"] = chosen
    record.setdefault("results", {})
    for shift in shifts if "methods" in stages else []:
        record["results"].setdefault(shift, {})
        for method in methods:
            predictor = make_predictor(method, checkpoint, chosen.get(method, {}), reference, args.amp)
            entries = [
                run_method(predictor, shifted(shift, seed), gt, classes)
                for seed in (seeds if shift in SEEDED_SHIFTS else seeds[:1])
            ]
            entry = mean_over_seeds(entries)
            record["results"][shift][method] = entry
            print(
                f"{shift:>11} {method:>12}: mean Dice {entry['mean_dice']:.4f} "
                f"({', '.join(f'{k} {v:.3f}' for k, v in entry['dice'].items())}) {entry['seconds']:.0f} s",
                flush=True,
            )
        save()

    # 3. the oracle: supervised fine-tuning of each parameter set with the true labels
    if "oracle" in stages:
        record["oracle"] = {"steps": args.oracle_steps, "lrs": ORACLE_LRS, "loss": "DiceCE", "windows_per_step": 8}
        record["oracle"]["results"] = {}
        for shift in shifts:
            path = shifted(shift, seeds[0])
            label = oracle_labels(probe, path, gt_path)
            row = {}
            for params in ORACLE_PARAMS:
                tries = []
                for lr in ORACLE_LRS[params]:
                    predictor = Predictor.from_checkpoint(checkpoint, amp=args.amp)
                    oracle = Oracle(predictor.model, params, steps=args.oracle_steps, lr=lr)
                    oracle.label = label
                    predictor.attach_adapter(oracle)
                    entry = run_method(predictor, path, gt, classes)
                    tries.append({**entry, "lr": lr, "num_parameters": oracle.last_report.num_parameters})
                row[params] = max(tries, key=lambda e: e["mean_dice"])
                print(
                    f"oracle {shift:>11} {params:>13}: {row[params]['mean_dice']:.4f} (lr {row[params]['lr']:g})",
                    flush=True,
                )
            record["oracle"]["results"][shift] = row
            save()

    print("\n" + markdown_table(record))
    print(f"\nwrote {out}")
    return 0


def markdown_table(record: dict) -> str:
    """The README table: mean Dice per shift x method (gain over none in brackets), then the oracle rows."""
    results = record["results"]
    columns = [m for m in METHODS if any(m in r for r in results.values())]
    lines = ["| shift | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for shift, row in results.items():
        base = row.get("none", {}).get("mean_dice")
        cells = []
        for m in columns:
            if m not in row:
                cells.append("-")
                continue
            v = row[m]["mean_dice"]
            gain = "" if base is None or m == "none" else f" ({v - base:+.3f})"
            cells.append(f"{v:.3f}{gain}")
        lines.append(f"| {shift} | " + " | ".join(cells) + " |")
    if "oracle" in record:
        params = list(ORACLE_PARAMS)
        header = "| oracle (true labels, seed 0) | none | " + " | ".join(params) + " |"
        lines += ["", header, "|---|---|" + "---|" * len(params)]
        for shift, row in record["oracle"]["results"].items():
            none = results.get(shift, {}).get("none", {})
            base = none.get("per_seed_mean_dice", [none.get("mean_dice")])[0]  # the oracle ran on the first seed
            cells = [f"{row[p]['mean_dice']:.3f} ({row[p]['mean_dice'] - base:+.3f})" for p in params]
            lines.append(f"| {shift} | {base:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
