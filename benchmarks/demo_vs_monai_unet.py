"""The demo task at equal wall time: medswin Swin UNETR vs MONAI's UNet (and MONAI's SwinUNETR).

Each model trains on the ``mni-tissue`` 2 mm training slab for the same time budget with the same
trainer (patches, DiceCE, AdamW, warm-up + cosine fitted to the budget, bf16 autocast where the CPU
has it), then predicts the held-out superior slab; Dice / HD95 per tissue are printed as a table and
written to ``benchmarks/results/demo_vs_monai_unet.json``.

    python benchmarks/demo_vs_monai_unet.py --budget-minutes 5
    python benchmarks/demo_vs_monai_unet.py --models medswin --budget-minutes 2   # one entry

Entries (``--models``): ``medswin`` (the ``medswin demo`` recipe), ``monai_unet`` (UNet channels
8-64, 32^3 patches x 4, lr 1e-3 -- the baseline of the design document), ``monai_swin_unetr`` (MONAI's
SwinUNETR F=12 with the medswin recipe: the same architecture without medswin's speed-ups),
``ds_transunet`` and ``cswin_unet`` (their tiny presets with the medswin recipe).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medswin.cli.demo import DEMO_RECIPE  # noqa: E402
from medswin.data.demo import build_mni_tissue  # noqa: E402
from medswin.evaluation import evaluate_pairs, markdown_table, match_cases, summarize  # noqa: E402
from medswin.inference import Predictor  # noqa: E402
from medswin.models import register_model  # noqa: E402
from medswin.training import TrainConfig, Trainer  # noqa: E402


class MonaiUNet(nn.Module):
    """MONAI ``UNet`` (channels 8-64, 2 residual units, instance norm) behind the registry contract."""

    size_divisor = 8

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.in_channels, self.out_channels = in_channels, out_channels
        self.net = UNet(
            3, in_channels, out_channels, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=2, norm="instance"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *S)`` -> logits ``(B, out, *S)``."""
        return self.net(x)


class MonaiSwinUNETR(nn.Module):
    """MONAI ``SwinUNETR`` (feature size 12) behind the registry contract."""

    size_divisor = 32

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        from monai.networks.nets import SwinUNETR

        self.in_channels, self.out_channels = in_channels, out_channels
        self.net = SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *S)`` -> logits ``(B, out, *S)``."""
        return self.net(x)


@register_model(MonaiUNet, default_roi=(32, 32, 32), paper="MONAI UNet (baseline)")
def bench_monai_unet() -> dict:
    """MONAI UNet baseline."""
    return {}


@register_model(MonaiSwinUNETR, default_roi=(64, 64, 32), paper="MONAI SwinUNETR (baseline)")
def bench_monai_swin_unetr() -> dict:
    """MONAI SwinUNETR baseline."""
    return {}


ENTRIES = {
    "medswin": dict(DEMO_RECIPE),
    "monai_unet": {**DEMO_RECIPE, "model": "bench_monai_unet", "roi_size": [32, 32, 32], "num_samples": 4, "lr": 1e-3},
    "monai_swin_unetr": {**DEMO_RECIPE, "model": "bench_monai_swin_unetr"},
    "ds_transunet": {**DEMO_RECIPE, "model": "ds_transunet_tiny"},
    "cswin_unet": {**DEMO_RECIPE, "model": "cswin_unet_tiny"},
}


def run_entry(name: str, recipe: dict, data: Path, out: Path, budget: float, seed: int) -> dict:
    config = TrainConfig.from_dict(
        {
            **recipe,
            "dataset": "mni-tissue",
            "data": str(data),
            "out": str(out / name),
            "budget_minutes": budget,
            "seed": seed,
        }
    )
    t0 = time.perf_counter()
    summary = Trainer(config).fit()
    train_s = time.perf_counter() - t0
    predictor = Predictor.from_checkpoint(out / name / "checkpoint_last.pt")
    predictor.predict_file(data / "imagesTs" / "mni_superior.nii.gz", out / name / "pred" / "mni_superior.nii.gz")
    rows = evaluate_pairs(match_cases(out / name / "pred", data / "labelsTs"), predictor.spec)
    result = summarize(rows, predictor.spec)
    return {
        "entry": name,
        "recipe": recipe,
        "steps": summary["steps"],
        "train_seconds": round(train_s, 1),
        "summary": result,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="medswin,monai_unet,monai_swin_unetr")
    p.add_argument("--budget-minutes", type=float, default=5.0)
    p.add_argument("--work", default="benchmarks/results/demo_runs", help="scratch folder for data and runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, help="override the medswin entry's learning rate (recipe search)")
    p.add_argument("--num-samples", type=int, help="override the medswin entry's patches per step")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_vs_monai_unet.json"))
    args = p.parse_args(argv)
    work = Path(args.work)
    data = work / "data" / "mni-tissue-2mm"
    if not (data / "dataset.json").is_file():
        build_mni_tissue(work / "data")
    if args.lr:
        ENTRIES["medswin"]["lr"] = args.lr
    if args.num_samples:
        ENTRIES["medswin"]["num_samples"] = args.num_samples
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        res = run_entry(name, ENTRIES[name], data, work, args.budget_minutes, args.seed)
        print(f"\n## {name} ({res['recipe']['model']}): {res['steps']} steps in {res['train_seconds']:.0f} s\n")
        print(markdown_table(res["summary"]), flush=True)
        previous = json.loads(out.read_text()).get("results", []) if out.is_file() else []
        merged = [r for r in previous if r["entry"] != name] + [res]  # a rerun entry replaces its old result
        out.write_text(
            json.dumps(
                {
                    "benchmark": "demo_vs_monai_unet",
                    "budget_minutes": args.budget_minutes,
                    "cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(),
                    "results": merged,
                },
                indent=2,
            )
        )  # written after each entry
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
