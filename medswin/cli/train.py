"""``medswin train``: train a registered model on a dataset folder (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml

from ..amp import AMP_CHOICES
from ..data.spec import LAYOUTS

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser("train", help="train a model (single process or torchrun --nproc_per_node=N -m medswin train)")
    p.add_argument("--config", help="YAML with any TrainConfig keys; flags below override it")
    p.add_argument("--plan", metavar="DIR", help="a medswin data plan folder (its train.yaml; flags override it)")
    p.add_argument("--dataset", help="dataset name in the registry (datasets.yaml / --datasets)")
    p.add_argument("--data", help="dataset folder")
    p.add_argument("--layout", choices=LAYOUTS, help="the folder's layout (default: the entry's, else detected)")
    p.add_argument("--model", help="registered model name (see medswin models list)")
    p.add_argument("--out", help="run folder (checkpoints, metrics.csv, curves.png, tensorboard/)")
    p.add_argument("--datasets", action="append", default=None, metavar="YAML", help="extra dataset entries")
    p.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model option, e.g. use_v2=true"
    )
    p.add_argument(
        "--encoder-weights",
        metavar="PATH",
        help="pretrained encoder (medswin pretrain's encoder.pt, or MONAI's SSL Swin UNETR weights)",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations-per-epoch", type=int)
    p.add_argument("--budget-minutes", type=float, help="fit the schedule to this training time")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--num-samples", type=int, help="random patches per volume")
    p.add_argument("--roi", type=int, nargs=3, metavar=("X", "Y", "Z"))
    p.add_argument("--lr", type=float)
    p.add_argument("--amp", choices=AMP_CHOICES)
    p.add_argument("--val-every", type=int)
    p.add_argument("--fold", type=int)
    p.add_argument("--folds", type=int, dest="n_folds")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, dest="num_workers")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    p.set_defaults(func=run)


def parse_model_args(items: list[str]) -> dict:
    """``["use_v2=true", "feature_size=24"]`` -> ``{"use_v2": True, "feature_size": 24}`` (YAML-typed values)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--model-arg expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    """Build the config, train, print the summary."""
    from ..training import TrainConfig, Trainer

    overrides = {
        "dataset": args.dataset,
        "data": args.data,
        "layout": args.layout,
        "model": args.model,
        "out": args.out,
        "datasets_files": args.datasets,
        "epochs": args.epochs,
        "iterations_per_epoch": args.iterations_per_epoch,
        "budget_minutes": args.budget_minutes,
        "batch_size": args.batch_size,
        "num_samples": args.num_samples,
        "roi_size": list(args.roi) if args.roi else None,
        "lr": args.lr,
        "amp": args.amp,
        "val_every": args.val_every,
        "fold": args.fold,
        "n_folds": args.n_folds,
        "seed": args.seed,
        "num_workers": args.num_workers,
        "device": args.device,
        "model_kwargs": parse_model_args(args.model_arg) or None,
        "encoder_weights": args.encoder_weights,
    }
    if args.plan:
        if args.config:
            raise ValueError("--plan is a config (DIR/train.yaml): give --plan or --config, not both")
        args.config = str(Path(args.plan) / "train.yaml")
        if not Path(args.config).is_file():
            raise ValueError(f"--plan {args.plan}: no train.yaml there (write one with medswin data plan)")
    config = TrainConfig.from_yaml(args.config, overrides)
    if not config.dataset:
        raise ValueError("no dataset: pass --dataset NAME (or set 'dataset' in --config); see medswin data datasets")
    if not config.data:
        raise ValueError("no dataset folder: pass --data DIR (or set 'data' in --config)")
    check_run_folder(config.out, config.data)
    trainer = Trainer(config, resume=args.resume)
    summary = trainer.fit()
    if trainer.dist.is_main:
        print(json.dumps(summary, indent=2))
    return 0


def check_run_folder(out: str, data: str) -> None:
    """A run folder must not be the data folder or lie inside it (checkpoints and logs mixed with the cases)."""
    from ..data.outputs import check_outputs

    check_outputs([out], [], [data])
