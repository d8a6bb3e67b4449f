"""``medswin bundle list|run|verify|export``: the MONAI bundles in ``bundles/`` through ``monai.bundle``."""

from __future__ import annotations

import argparse

import yaml

BUNDLES_HELP = (
    "folder of the bundles (default: $MEDSWIN_BUNDLES, else bundles/ of the medswin source repository, "
    "else ./bundles; the bundles are not part of the installed package)"
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bundle`` and its subcommands."""
    p = sub.add_parser(
        "bundle",
        help="MONAI bundles: list, run, verify, export",
        description="MONAI bundles of medswin models (bundles/<name>/ in the repository).",
    )
    bundle_sub = p.add_subparsers(dest="bundle_command", required=True, metavar="SUBCOMMAND")

    ls = bundle_sub.add_parser("list", help="the bundles and their tasks")
    ls.add_argument("--bundles-dir", help=BUNDLES_HELP)
    ls.set_defaults(func=run_list)

    run = bundle_sub.add_parser("run", help="run a bundle config with monai.bundle (also under torchrun)")
    run.add_argument("name", help="bundle name (see medswin bundle list) or a bundle folder")
    run.add_argument("--config", default="inference", choices=["train", "inference", "evaluate", "multi_gpu_train"])
    _common(run)
    run.set_defaults(func=run_run)

    verify = bundle_sub.add_parser("verify", help="verify_metadata, verify_net_in_out and every config's components")
    verify.add_argument("name", help="bundle name or folder")
    verify.add_argument("--n", type=int, default=2, help="n in the metadata's '32*n' sizes for the fake input (2)")
    _common(verify)
    verify.set_defaults(func=run_verify)

    export = bundle_sub.add_parser(
        "export", help="TorchScript (traced) or ONNX export of a trained checkpoint, checked against PyTorch"
    )
    export.add_argument("name", help="bundle name or folder")
    export.add_argument("--ckpt", help="checkpoint (default: the bundle's models/model.pt)")
    export.add_argument(
        "--format",
        default="torchscript",
        choices=["torchscript", "onnx"],
        help="torchscript (models/model.ts) or onnx (models/model.onnx: dynamic batch, dataset spec inside, for "
        "medswin predict --model and ONNX Runtime)",
    )
    export.add_argument("-o", "--out", help="the exported file (default: the bundle's models/model.ts or .onnx)")
    _common(export)
    export.set_defaults(func=run_export)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--override",
        nargs="+",
        action="extend",
        default=[],
        metavar="ID=VALUE",
        help="config overrides, e.g. dataset_dir=/data/BTCV model_name=swin_unetr_tiny roi_size=[64,64,64]",
    )
    p.add_argument("--bundles-dir", help=BUNDLES_HELP)


def parse_overrides(items: list[str]) -> dict:
    """``["dataset_dir=/data", "roi_size=[64,64,64]"]`` -> ``{"dataset_dir": "/data", "roi_size": [64, 64, 64]}``
    (values typed as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--override expects ID=VALUE (a config id, e.g. dataset_dir=/data), got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


def run_list(args: argparse.Namespace) -> int:
    """Print each bundle with its task."""
    import json

    from ..bundle import find_bundles_dir, list_bundles

    root = find_bundles_dir(args.bundles_dir)
    for name in list_bundles(root):
        meta = json.loads((root / name / "configs" / "metadata.json").read_text())
        print(f"{name:<24} {meta.get('task', '')}")
    print(f"({root})")
    return 0


def run_run(args: argparse.Namespace) -> int:
    """Run the chosen config of the bundle."""
    from ..bundle import run_bundle

    run_bundle(args.name, args.config, parse_overrides(args.override), args.bundles_dir)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Run the verifiers and print what passed."""
    from ..bundle import verify_bundle

    for line in verify_bundle(args.name, parse_overrides(args.override), args.bundles_dir, n=args.n):
        print(f"ok  {line}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export and print the exported file's path."""
    from ..bundle import export_bundle, export_bundle_onnx

    export = export_bundle_onnx if args.format == "onnx" else export_bundle
    print(export(args.name, args.ckpt, args.out, parse_overrides(args.override), args.bundles_dir))
    return 0
