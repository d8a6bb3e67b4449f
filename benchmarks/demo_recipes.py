"""Demo recipes at a fixed number of steps: which patch / batch / learning rate reaches the demo's Dice goals
(CSF >= 0.65, GM >= 0.92, WM >= 0.92 on the held-out slab) within the steps a slow CPU can take in 5 minutes.

Each run trains ``swin_unetr_tiny`` on the ``mni-tissue`` inferior slab with the demo's trainer and schedule
(warm-up + cosine over exactly ``steps`` steps, no time budget), predicts the held-out superior slab and scores
it.  Runs are given as ``STEPS:PATCHES:ROI:LR:SEED`` (``160:2:64x64x32:3e-3:1``) and appended to the JSON,
each with the machine it ran on (the number of steps, not the machine, decides the Dice; the seconds per step
show what a CPU class affords).  The AVX2 runs of the README were made under the emulation with one thread,
about as fast as the 2-core AVX2 EPYC of issue 18 is with two:

    OMP_NUM_THREADS=1 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 \\
        python benchmarks/demo_recipes.py 160:2:64x64x32:3e-3:1 160:4:64x64x32:2e-3:1
    python benchmarks/demo_recipes.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _bench  # noqa: E402

OUT = _bench.RESULTS / "demo_recipes.json"
GOALS = {"CSF": 0.65, "GM": 0.92, "WM": 0.92}


def run(spec: str, work: Path, model_kwargs: dict | None = None) -> dict:
    """Train, predict and score one ``STEPS:PATCHES:ROI:LR:SEED`` run in ``work``; its result row."""
    import torch

    from medswin.cli.demo import DEMO_RECIPE
    from medswin.cpu import cpu_info
    from medswin.data.demo import build_mni_tissue
    from medswin.evaluation import evaluate_pairs, match_cases, summarize
    from medswin.inference import Predictor
    from medswin.training import TrainConfig, Trainer

    steps, patches, roi, lr, seed = spec.split(":")
    data = work / "data" / "mni-tissue-2mm"
    if not (data / "dataset.json").is_file():
        build_mni_tissue(work / "data")
    out = work / spec.replace(":", "_")
    recipe = {**DEMO_RECIPE, "num_samples": int(patches), "roi_size": [int(r) for r in roi.split("x")], "lr": float(lr)}
    recipe["epochs"] = int(steps) // recipe["iterations_per_epoch"]
    recipe["model_kwargs"] = model_kwargs or {}
    config = TrainConfig.from_dict(
        {
            **recipe,
            "dataset": "mni-tissue",
            "data": str(data),
            "out": str(out / "run"),
            "amp": "fp32",
            "seed": int(seed),
        }
    )
    start = time.perf_counter()
    summary = Trainer(config).fit()
    train_s = time.perf_counter() - start
    predictor = Predictor.from_checkpoint(out / "run" / "checkpoint_last.pt", amp="fp32")
    predictor.predict_file(data / "imagesTs" / "mni_superior.nii.gz", out / "pred" / "mni_superior.nii.gz")
    scores = summarize(evaluate_pairs(match_cases(out / "pred", data / "labelsTs"), predictor.spec), predictor.spec)
    return {
        "steps": summary["steps"],
        "num_samples": recipe["num_samples"],
        "roi_size": recipe["roi_size"],
        "lr": recipe["lr"],
        "model_kwargs": recipe["model_kwargs"],
        "seed": int(seed),
        "train_s": round(train_s, 1),
        "seconds_per_step": round(train_s / summary["steps"], 2),
        "dice": {name: round(v["dice"]["mean"], 4) for name, v in scores["per_class"].items()},
        "cpu": cpu_info().isa_label,
        "threads": torch.get_num_threads(),
    }


def markdown_table(result: dict) -> str:
    """The README table: one row per run, sorted by steps x patches (the work), goals met in bold."""
    lines = [
        "| patches x roi, lr | steps | seed | CSF | GM | WM | goals met | s / step (ISA, threads) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(result["runs"], key=lambda r: (r["steps"] * r["num_samples"], r["num_samples"], r["lr"], r["seed"]))
    for r in rows:
        met = all(r["dice"][k] >= v for k, v in GOALS.items())
        dice = " | ".join(
            f"**{r['dice'][k]:.3f}**" if r["dice"][k] >= v else f"{r['dice'][k]:.3f}" for k, v in GOALS.items()
        )
        heads = r.get("model_kwargs", {}).get("num_heads")
        lines.append(
            f"| {r['num_samples']} x {'x'.join(map(str, r['roi_size']))}, {r['lr']:g}"
            + (f", heads {'-'.join(map(str, heads))}" if heads else "")
            + f" | {r['steps']} | {r['seed']} "
            f"| {dice} | {'yes' if met else 'no'} | {r['seconds_per_step']:.2f} ({r['cpu']}, {r['threads']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="STEPS:PATCHES:ROI:LR:SEED, e.g. 160:2:64x64x32:3e-3:1")
    p.add_argument("--model-kwargs", type=json.loads, default=None, help="e.g. '{\"num_heads\": [1, 2, 4, 8]}'")
    p.add_argument("--out", default=str(OUT), help="JSON to append to")
    p.add_argument("--table", action="store_true", help="only print the table of the JSON")
    opts = p.parse_args(argv)
    path = Path(opts.out)
    result = (
        json.loads(path.read_text()) if path.is_file() else {"benchmark": "demo_recipes", "goals": GOALS, "runs": []}
    )
    if opts.table or not opts.runs:
        print(markdown_table(result))
        return 0
    with tempfile.TemporaryDirectory() as work:
        for spec in opts.runs:
            row = run(spec, Path(work), opts.model_kwargs)
            row["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
            row["cpu_model"] = _bench.cpu_name()
            row["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
            result["runs"].append(row)
            _bench.write_json(result, path)
            print(json.dumps(row), flush=True)
    print(markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
