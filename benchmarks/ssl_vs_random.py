"""Does self-supervised pretraining help?  SSL init vs random init on the ``mni-tissue`` demo task.

1. Unlabeled data: the training image (the inferior slab of the MNI template at 2 mm) and
   ``--copies`` augmented copies of it (random affine: rotations up to 10 degrees, scaling +-10%;
   bias field; gamma contrast), written to ``WORK/ssl/unlabeled/``.  The held-out superior slab is
   never seen.
2. Pretraining: ``swin_unetr_tiny``'s encoder with the Swin UNETR recipe (inpaint, rotate,
   contrast) for ``--pretrain-steps`` steps of 64x64x32 crops (x4 per step), via ``PretrainTrainer``.
3. Reduced label budget: the labels of a ``--label-slices``-slice axial slab in the middle of the
   training slab only (32 of its 57 slices by default: the thinnest slab a 64x64x32 patch fits),
   and ``--finetune-steps`` fine-tuning steps with the demo recipe (``DEMO_RECIPE``: 64x64x32
   patches x 4, AdamW 2e-3, warm-up + cosine), the same seed, patches and schedule for both inits.
4. Both models predict the held-out superior slab; Dice / HD95 per tissue are printed and written to
   ``benchmarks/results/ssl_vs_random.json``.

    python benchmarks/ssl_vs_random.py                      # 150 pretraining + 2 x 50 fine-tuning steps
    python benchmarks/ssl_vs_random.py --pretrain-steps 50 --finetune-steps 20   # a quick look

Step counts, not time budgets, so the comparison does not depend on what else runs on the machine.
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

from medswin.cli.demo import DEMO_RECIPE  # noqa: E402
from medswin.data.demo import build_mni_tissue  # noqa: E402
from medswin.data.io import load_volume, write_nifti  # noqa: E402
from medswin.evaluation import evaluate_pairs, markdown_table, match_cases, summarize  # noqa: E402
from medswin.inference import Predictor  # noqa: E402
from medswin.ssl import PretrainConfig, PretrainTrainer  # noqa: E402
from medswin.training import TrainConfig, Trainer  # noqa: E402


def write_augmented_copies(image: Path, out: Path, copies: int, seed: int) -> list[Path]:
    """The image and ``copies`` randomly augmented versions of it (affine, bias field, gamma) as NIfTI in ``out``."""
    from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandBiasField

    vol = load_volume(image)
    arr = vol.array.astype(np.float32)
    paths = [write_nifti(arr[0], vol.affine, out / "copy00.nii.gz")]
    augment = Compose(
        [
            RandAffine(prob=1.0, rotate_range=(0.17, 0.17, 0.17), scale_range=(0.1, 0.1, 0.1), padding_mode="zeros"),
            RandBiasField(prob=1.0, coeff_range=(0.1, 0.3)),
            RandAdjustContrast(prob=1.0, gamma=(0.7, 1.5)),
        ]
    )
    augment.set_random_state(seed=seed)
    for i in range(1, copies + 1):
        aug = np.asarray(augment(torch.from_numpy(arr)))[0]
        aug[arr[0] == 0] = 0  # keep the background (outside the skull-stripped brain) at 0
        aug = np.clip(aug, 0, None)
        paths.append(write_nifti(aug.astype(np.float32), vol.affine, out / f"copy{i:02d}.nii.gz"))
    return paths


def label_slab(data: Path, out: Path, slices: int) -> dict[str, str]:
    """The central ``slices`` axial slices of the training case (image and label), as the labelled budget."""
    image = load_volume(data / "imagesTr" / "mni_inferior.nii.gz")
    label = load_volume(data / "labelsTr" / "mni_inferior.nii.gz")
    depth = image.array.shape[-1]
    if not 32 <= slices <= depth:
        raise ValueError(f"--label-slices must be in [32, {depth}] (a 64x64x32 patch must fit), got {slices}")
    start = (depth - slices) // 2
    affine = image.affine.copy()
    affine[:3, 3] = (image.affine @ np.array([0, 0, start, 1.0]))[:3]
    img = write_nifti(image.array[0, :, :, start : start + slices].astype(np.float32), affine, out / "image.nii.gz")
    lab = write_nifti(label.array[0, :, :, start : start + slices].astype(np.uint8), affine, out / "label.nii.gz")
    return {"case": "label_slab", "image": str(img), "label": str(lab)}


def finetune_and_evaluate(
    name: str, case: dict, data: Path, work: Path, steps: int, seed: int, encoder: Path | None
) -> dict:
    """Fine-tune with the demo recipe for ``steps`` steps (optionally from ``encoder``), predict and score the test slab."""
    recipe = {**DEMO_RECIPE, "epochs": steps // DEMO_RECIPE["iterations_per_epoch"]}
    config = TrainConfig.from_dict(
        {
            **recipe,
            "dataset": "mni-tissue",
            "data": str(data),
            "out": str(work / name),
            "seed": seed,
            "encoder_weights": str(encoder) if encoder else None,
        }
    )
    t0 = time.perf_counter()
    summary = Trainer(config, cases={"train": [case], "val": []}).fit()
    train_s = time.perf_counter() - t0
    predictor = Predictor.from_checkpoint(work / name / "checkpoint_last.pt")
    predictor.predict_file(data / "imagesTs" / "mni_superior.nii.gz", work / name / "pred" / "mni_superior.nii.gz")
    rows = evaluate_pairs(match_cases(work / name / "pred", data / "labelsTs"), predictor.spec)
    return {
        "init": name,
        "steps": summary["steps"],
        "train_seconds": round(train_s, 1),
        "summary": summarize(rows, predictor.spec),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-steps", type=int, default=150)
    p.add_argument("--finetune-steps", type=int, default=50, help="a multiple of 10 (epochs of 10 steps)")
    p.add_argument("--label-slices", type=int, default=32)
    p.add_argument("--copies", type=int, default=7, help="augmented copies of the training image")
    p.add_argument("--tasks", default="inpaint,rotate,contrast")
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="benchmarks/results/demo_runs", help="scratch folder for data and runs")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ssl_vs_random.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    work = Path(args.work)
    data = work / "data" / "mni-tissue-2mm"
    if not (data / "dataset.json").is_file():
        build_mni_tissue(work / "data")
    ssl_dir = work / "ssl"
    image = data / "imagesTr" / "mni_inferior.nii.gz"
    unlabeled = write_augmented_copies(image, ssl_dir / "unlabeled", args.copies, args.seed)
    case = label_slab(data, ssl_dir / "labelled", args.label_slices)

    t0 = time.perf_counter()
    pretrain = PretrainTrainer(
        PretrainConfig.from_dict(
            {
                "model": DEMO_RECIPE["model"],
                "data": str(ssl_dir / "unlabeled"),
                "dataset": "mni-tissue",
                "out": str(ssl_dir / "pretrain"),
                "tasks": args.tasks.split(","),
                "roi_size": DEMO_RECIPE["roi_size"],
                "num_samples": DEMO_RECIPE["num_samples"],
                "iterations_per_epoch": 10,
                "epochs": args.pretrain_steps // 10,
                "lr": args.pretrain_lr,
                "weight_decay": 0.1,
                "warmup_epochs": 1,
                "seed": args.seed,
            }
        )
    )
    pre = pretrain.fit()
    pretrain_s = time.perf_counter() - t0
    first, last = pretrain.history[0], pretrain.history[-1]
    print(
        f"pretraining: {pre['steps']} steps in {pretrain_s:.0f} s; "
        f"loss {first['train_loss']:.3f} -> {last['train_loss']:.3f}"
    )

    results = []
    for name, encoder in (("random", None), ("ssl", Path(pre["encoder"]))):
        res = finetune_and_evaluate(name, case, data, ssl_dir, args.finetune_steps, args.seed, encoder)
        results.append(res)
        print(f"\n## {name} init: {res['steps']} fine-tuning steps in {res['train_seconds']:.0f} s\n")
        print(markdown_table(res["summary"]), flush=True)

    print("\n| init | CSF Dice | GM Dice | WM Dice | mean Dice |\n|---|---|---|---|---|")
    for r in results:
        d = r["summary"]["per_class"]
        print(
            f"| {r['init']} | {d['CSF']['dice']['mean']:.3f} | {d['GM']['dice']['mean']:.3f} | "
            f"{d['WM']['dice']['mean']:.3f} | {r['summary']['mean_dice']:.3f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "ssl_vs_random",
        "model": DEMO_RECIPE["model"],
        "tasks": args.tasks.split(","),
        "unlabeled_volumes": len(unlabeled),
        "pretrain_steps": pre["steps"],
        "pretrain_seconds": round(pretrain_s, 1),
        "pretrain_loss_first_last": [first["train_loss"], last["train_loss"]],
        "pretrain_task_losses_last": {k: v for k, v in last.items() if k.startswith("loss_")},
        "label_budget": f"central {args.label_slices} axial slices of the training slab",
        "finetune_steps": args.finetune_steps,
        "finetune_recipe": {**DEMO_RECIPE, "epochs": args.finetune_steps // 10},
        "seed": args.seed,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "results": results,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
