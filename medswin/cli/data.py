"""``medswin data``: ``datasets`` (the registry), ``check PATH --dataset NAME``, ``prepare mni-tissue OUTDIR``."""

from __future__ import annotations

import argparse

from ..data.spec import LAYOUTS


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` and its subcommands."""
    p = sub.add_parser("data", help="dataset registry, integrity checks, demo dataset")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    ls = data_sub.add_parser("datasets", help="list the dataset registry (built-in plus --datasets files)")
    ls.add_argument("--datasets", action="append", default=[], metavar="YAML", help="extra dataset entries")
    ls.set_defaults(func=run_list)

    check = data_sub.add_parser("check", help="read every case of a dataset folder and report all problems")
    check.add_argument("path", help="dataset folder (Decathlon, nnU-Net, BraTS, BTCV or flat layout)")
    check.add_argument("--dataset", required=True, help="dataset name in the registry, e.g. btcv, brats2021")
    check.add_argument("--datasets", action="append", default=[], metavar="YAML", help="extra dataset entries")
    check.add_argument("--layout", choices=LAYOUTS, help="the folder's layout (default: the entry's, else detected)")
    check.set_defaults(func=run_check)

    drr = data_sub.add_parser("drr", help="coronal and sagittal DRRs of a CT (and its label on the view grid)")
    drr.add_argument("ct", help="CT volume in HU (NIfTI/NRRD/MHA/DICOM folder)")
    drr.add_argument("label", nargs="?", help="label volume on the CT's grid (optional)")
    drr.add_argument("-o", "--out", required=True, help="output folder")
    drr.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"), help="detector pixels")
    drr.add_argument("--pixel-spacing", type=float, help="detector pixel size in mm (default: fit the CT)")
    drr.add_argument("--perspective", action="store_true", help="cone beam: source 1800 mm, detector 2000 mm")
    drr.set_defaults(func=run_drr)

    x2s = data_sub.add_parser("prepare-x2s", help="turn a CT segmentation dataset into a biplanar (Swin-X2S) one")
    x2s.add_argument("path", help="CT dataset folder (Decathlon, nnU-Net, BTCV or flat layout)")
    x2s.add_argument("--dataset", required=True, help="the CT dataset's registry name (labels)")
    x2s.add_argument("--datasets", action="append", default=[], metavar="YAML", help="extra dataset entries")
    x2s.add_argument("-o", "--out", required=True, help="output folder (gets dataset.json and datasets.yaml)")
    x2s.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"))
    x2s.add_argument("--perspective", action="store_true")
    x2s.set_defaults(func=run_prepare_x2s)

    plan = data_sub.add_parser(
        "plan", help="fingerprint a dataset folder and plan spacing, roi (measured), normalisation and epochs"
    )
    plan.add_argument("path", help="dataset folder (Decathlon, nnU-Net, BraTS, BTCV or flat layout)")
    plan.add_argument("--name", required=True, help="the datasets.yaml entry to write")
    plan.add_argument(
        "--out", required=True, help="plan folder: fingerprint.json, datasets.yaml, train.yaml, plan.json"
    )
    plan.add_argument("--model", default="swin_unetr_tiny", help="registered 3D model (swin_unetr_tiny)")
    plan.add_argument("--memory-gb", type=float, default=8.0, help="memory one training step may take (8)")
    plan.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the trial steps run (cpu)")
    plan.add_argument("--budget-hours", type=float, default=12.0, help="training time the epochs are fitted to (12)")
    plan.add_argument("--modality", type=str.upper, choices=["CT", "MRI"], help="default: guessed from the intensities")
    plan.add_argument("--layout", choices=LAYOUTS, help="the folder's layout (default: detected)")
    plan.add_argument("--workers", type=int, help="processes reading the cases (default: up to 4)")
    plan.add_argument("--explain", action="store_true", help="print each decision with the number it came from")
    plan.set_defaults(func=run_plan)

    prep = data_sub.add_parser("prepare", help="build a dataset offline (mni-tissue: the real demo data)")
    prep.add_argument("name", choices=["mni-tissue"])
    prep.add_argument("out", help="output folder (mni-tissue-1mm/ and mni-tissue-2mm/ are created inside)")
    prep.set_defaults(func=run_prepare)


def run_list(args: argparse.Namespace) -> int:
    """Print the registry."""
    from ..data.spec import load_dataset_specs

    for name, spec in load_dataset_specs(args.datasets).items():
        outputs = ", ".join(spec.output_names)
        print(f"{name:<24} {spec.num_channels} ch ({', '.join(spec.channel_names)}) -> {outputs}")
        layout, spacing = spec.layout or "detected", spec.target_spacing or "native"
        print(f"{'':<24} layout {layout}, spacing {spacing}, roi {spec.roi_size or 'the model default'}; {spec.source}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Print the integrity report; exit 1 when problems were found."""
    from ..data.check import check_dataset
    from ..data.spec import get_dataset_spec

    spec = get_dataset_spec(args.dataset, args.datasets)
    report = check_dataset(args.path, spec, args.layout)
    print(report.text())
    return 0 if report.ok else 1


def run_plan(args: argparse.Namespace) -> int:
    """Fingerprint, plan, write the plan folder; print where it went (and the decisions with ``--explain``)."""
    from ..data.fingerprint import fingerprint_dataset
    from ..data.outputs import check_outputs
    from ..training.plan import explain, make_plan, write_plan

    if args.memory_gb <= 0 or args.budget_hours <= 0:
        raise ValueError("--memory-gb and --budget-hours must be positive")
    check_outputs([args.out], [], [args.path])
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device here (plan on the machine that will train)")
    fingerprint = fingerprint_dataset(args.path, args.layout, args.workers)
    plan = make_plan(fingerprint, args.name, args.model, args.memory_gb, args.device, args.budget_hours, args.modality)
    written = write_plan(plan, fingerprint, args.out)
    if args.explain:
        print(explain(plan))
    if fingerprint["failed"]:
        print(f"{len(fingerprint['failed'])} case(s) could not be read and were left out:")
        for f in fingerprint["failed"]:
            print(f"  {f['case']}: {f['error']}")
    for path in written:
        print(path)
    print(f"train with: medswin train --plan {args.out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Build the requested dataset."""
    from ..data.demo import build_mni_tissue

    for res, folder in build_mni_tissue(args.out).items():
        print(f"mni-tissue {res}: {folder}")
    return 0


def run_drr(args: argparse.Namespace) -> int:
    """Write both views (NIfTI + PNG) and the aligned label."""
    from ..data.drr import drr_from_files

    written = drr_from_files(
        args.ct,
        args.label,
        args.out,
        height=args.size[0],
        width=args.size[1],
        perspective=args.perspective,
        pixel_spacing=args.pixel_spacing,
    )
    for path in written.values():
        print(path)
    return 0


def run_prepare_x2s(args: argparse.Namespace) -> int:
    """Convert a CT dataset into a biplanar one and say how to train on it."""
    from ..data.biplanar import prepare_biplanar
    from ..data.spec import get_dataset_spec

    spec = get_dataset_spec(args.dataset, args.datasets)
    out = prepare_biplanar(args.path, args.out, spec, args.size[0], args.size[1], args.perspective)
    print(
        f"biplanar dataset: {out}\ntrain with: medswin train --dataset {spec.name}-x2s --datasets {out / 'datasets.yaml'} "
        f"--data {out} --model swin_x2s_small"
    )
    return 0
