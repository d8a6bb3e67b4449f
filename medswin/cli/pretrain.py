"""``medswin pretrain``: self-supervised pretraining of a model's encoder on unlabeled volumes.

medswin pretrain --model swin_unetr_base --data /scans --ct --tasks inpaint,rotate,contrast --out runs/ssl
medswin pretrain --model cswin_unet_small --data /scans --tasks inpaint,rotate,contrast,simmim --awl
medswin train ... --encoder-weights runs/ssl/encoder.pt
"""

from __future__ import annotations

import argparse
import json
import logging

from ..amp import AMP_CHOICES
from .train import parse_model_args

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` subcommand."""
    p = sub.add_parser(
        "pretrain", help="self-supervised pretraining of an encoder on unlabeled volumes (writes encoder.pt)"
    )
    p.add_argument("--config", help="YAML with any PretrainConfig keys; flags below override it")
    p.add_argument("--model", help="registered 3D model whose encoder is pretrained (see medswin models list)")
    p.add_argument(
        "--data", help="folder of volumes (NIfTI/NRRD/MHA/DICOM series, searched recursively) or datalist JSON"
    )
    p.add_argument(
        "--tasks",
        help="comma-separated from inpaint,rotate,contrast (the Swin UNETR recipe, the default), simmim, barlow",
    )
    p.add_argument("--awl", action="store_true", default=None, help="automatic weighted loss (the CSwin UNet recipe)")
    p.add_argument("--out", help="run folder (encoder.pt, pretrain.json, checkpoints, metrics.csv)")
    p.add_argument("--dataset", help="use this registry dataset's normalisation and spacing")
    p.add_argument("--datasets", action="append", default=None, metavar="YAML", help="extra dataset entries")
    p.add_argument("--ct", action="store_true", default=None, help="CT: window [-1000, 1000] -> [0, 1] (else z-score)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="resample to this spacing (mm)")
    p.add_argument("--in-channels", type=int, help="image channels when no --dataset is named (1)")
    p.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model option, e.g. use_v2=true"
    )
    p.add_argument("--roi", type=int, nargs=3, metavar=("X", "Y", "Z"), help="crop size (96 96 96)")
    p.add_argument("--num-samples", type=int, help="random crops per volume (2)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--iterations-per-epoch", type=int)
    p.add_argument("--budget-minutes", type=float, help="fit the schedule to this training time")
    p.add_argument("--lr", type=float, help="AdamW learning rate (4e-4)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (0.1)")
    p.add_argument("--mask-ratio", type=float, help="SimMIM masked fraction of cells (0.6)")
    p.add_argument("--mask-cell", type=int, help="SimMIM mask cell size in voxels (16; must divide the roi)")
    p.add_argument(
        "--val-case",
        action="append",
        dest="val_cases",
        metavar="NAME",
        help="hold out this volume for the pretext validation loss",
    )
    p.add_argument("--val-every", type=int)
    p.add_argument("--amp", choices=AMP_CHOICES)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, dest="num_workers")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the config, pretrain, print the summary (with the path of encoder.pt)."""
    from ..ssl import PretrainConfig, PretrainTrainer

    overrides = {
        "model": args.model,
        "data": args.data,
        "out": args.out,
        "dataset": args.dataset,
        "datasets_files": args.datasets,
        "tasks": args.tasks.split(",") if args.tasks else None,
        "awl": args.awl,
        "ct": args.ct,
        "spacing": list(args.spacing) if args.spacing else None,
        "in_channels": args.in_channels,
        "model_kwargs": parse_model_args(args.model_arg) or None,
        "roi_size": list(args.roi) if args.roi else None,
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "iterations_per_epoch": args.iterations_per_epoch,
        "budget_minutes": args.budget_minutes,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "mask_ratio": args.mask_ratio,
        "mask_cell": args.mask_cell,
        "val_cases": args.val_cases,
        "val_every": args.val_every,
        "amp": args.amp,
        "seed": args.seed,
        "num_workers": args.num_workers,
        "device": args.device,
    }
    config = PretrainConfig.from_yaml(args.config, overrides)
    if not config.data:
        raise ValueError("no data: pass --data FOLDER_OR_DATALIST (or set 'data' in --config)")
    summary = PretrainTrainer(config).fit(resume=args.resume)
    print(json.dumps(summary, indent=2))
    return 0
