"""``medswin demo``: the whole pipeline on real data, on a CPU, in a few minutes.

1. build the ``mni-tissue`` dataset from the MNI template in the nilearn wheel (offline);
2. train a Swin UNETR on the inferior slab for a bounded time (the schedule fits the budget);
3. predict the held-out superior slab (sliding windows, back on the input grid);
4. evaluate (Dice, HD95, NSD per tissue), print the table, write the report and overlay PNGs.

Everything lands in ``--out`` (default ``demo_output/``): ``data/``, ``run/`` (checkpoints,
metrics.csv, curves.png), ``prediction/mni_superior.nii.gz``, ``report/`` (per_case.csv,
summary.json, summary.md, boxplot_dice.png, overlay_best.png, overlay_worst.png).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

# the demo recipe (measured on 2 CPU cores: see README "Demo"); flags override
DEMO_RECIPE = {
    "model": "swin_unetr_tiny",
    "roi_size": [64, 64, 32],
    "num_samples": 4,
    "lr": 2e-3,
    "weight_decay": 1e-5,
    "warmup_epochs": 1,
    "iterations_per_epoch": 10,
    "epochs": 1000,
    "val_every": 0,
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser("demo", help="prepare mni-tissue, train, predict the held-out slab, evaluate (CPU, minutes)")
    p.add_argument("--out", default="demo_output", help="output folder")
    p.add_argument("--model", default=DEMO_RECIPE["model"], help="registered model name")
    p.add_argument("--budget-minutes", type=float, default=5.0, help="training time")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--lr", type=float, default=DEMO_RECIPE["lr"])
    p.add_argument("--num-samples", type=int, default=DEMO_RECIPE["num_samples"])
    p.add_argument("--roi", type=int, nargs=3, default=DEMO_RECIPE["roi_size"], metavar=("X", "Y", "Z"))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the four steps and print the Dice table."""
    from ..data.atomic import write_text_atomic
    from ..data.demo import build_mni_tissue
    from ..evaluation import evaluate_pairs, markdown_table, match_cases, summarize, write_report
    from ..inference import Predictor
    from ..training import TrainConfig, Trainer

    out = Path(args.out)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = out / "data" / "mni-tissue-2mm"
    if not (data / "dataset.json").is_file():
        build_mni_tissue(out / "data")
    timings["prepare_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    recipe = {
        **DEMO_RECIPE,
        "model": args.model,
        "lr": args.lr,
        "num_samples": args.num_samples,
        "roi_size": list(args.roi),
    }
    config = TrainConfig.from_dict(
        {
            **recipe,
            "dataset": "mni-tissue",
            "data": str(data),
            "out": str(out / "run"),
            "amp": args.amp,
            "budget_minutes": args.budget_minutes,
            "seed": args.seed,
        }
    )
    summary = Trainer(config).fit()
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    predictor = Predictor.from_checkpoint(out / "run" / "checkpoint_last.pt", amp=args.amp)
    image = data / "imagesTs" / "mni_superior.nii.gz"
    predictor.predict_file(image, out / "prediction" / "mni_superior.nii.gz")
    timings["predict_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = evaluate_pairs(match_cases(out / "prediction", data / "labelsTs"), predictor.spec)
    write_report(rows, predictor.spec, out / "report", images={"mni_superior": image})
    timings["evaluate_s"] = time.perf_counter() - t0
    result = {
        "model": args.model,
        "steps": summary["steps"],
        "budget_minutes": args.budget_minutes,
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "summary": summarize(rows, predictor.spec),
    }
    write_text_atomic(out / "demo.json", json.dumps(result, indent=2))
    print(
        f"\n{args.model}, {summary['steps']} training steps in {timings['train_s']:.0f} s; "
        f"held-out superior slab of the MNI template:\n"
    )
    print(markdown_table(result["summary"]))
    print(f"\nprediction: {out / 'prediction' / 'mni_superior.nii.gz'}\nreport:     {out / 'report'}")
    return 0
