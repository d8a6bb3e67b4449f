"""``medswin evaluate --pred DIR --gt DIR --dataset NAME``: Dice, HD95, NSD per case and class, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.formats import VOLUME_ENDINGS
from ..evaluation.lesionwise import CHALLENGES, DEFAULT_CHALLENGE


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser("evaluate", help="score predictions against ground truth (CSV, JSON, Markdown, PNG report)")
    p.add_argument(
        "--pred",
        required=True,
        help="folder of predicted label maps (named by case: img0061, case_labels ... pair too)",
    )
    p.add_argument("--gt", required=True, help="folder of ground-truth label maps, or the dataset folder (any layout)")
    p.add_argument("--dataset", required=True, help="dataset name (labels, BraTS regions)")
    p.add_argument("--datasets", action="append", default=[], metavar="YAML", help="extra dataset entries")
    p.add_argument("--out", help="report folder (default: PRED/../evaluation)")
    p.add_argument("--images", help="folder of the images, for the best/worst overlay PNGs")
    p.add_argument("--nsd-tolerance", type=float, default=1.0, help="NSD tolerance in mm (default 1)")
    brats = p.add_mutually_exclusive_group()
    brats.add_argument(
        "--brats", dest="brats", action="store_true", default=None, help="BraTS conventions (HD95 373.13 for empty)"
    )
    brats.add_argument("--no-brats", dest="brats", action="store_false")
    lesions = p.add_mutually_exclusive_group()
    lesions.add_argument(
        "--lesion-wise",
        nargs="?",
        const="BraTS-GLI",
        choices=sorted(CHALLENGES),
        help="BraTS 2023+ lesion-wise Dice / HD95 and lesion counts per region, with the challenge's dilation and "
        "volume threshold (BraTS-GLI; default on for brats2023)",
    )
    lesions.add_argument("--no-lesion-wise", dest="lesion_wise", action="store_false")
    p.set_defaults(func=run)


def find_images(folder: str | Path, cases: list[str]) -> dict[str, Path]:
    """Image per case in ``folder``: ``case.nii.gz`` or nnU-Net's ``case_0000.nii.gz``."""
    folder = Path(folder)
    found = {}
    for case in cases:
        for stem in (case, f"{case}_0000"):
            path = next((folder / f"{stem}{e}" for e in VOLUME_ENDINGS if (folder / f"{stem}{e}").is_file()), None)
            if path is not None:
                found[case] = path
                break
    return found


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print the Markdown table."""
    from ..data.spec import get_dataset_spec
    from ..evaluation import evaluate_pairs, markdown_table, match_cases, summarize, write_report

    spec = get_dataset_spec(args.dataset, args.datasets)
    pairs = match_cases(args.pred, args.gt)
    lesion_wise = DEFAULT_CHALLENGE.get(spec.name) if args.lesion_wise is None else (args.lesion_wise or None)
    rows = evaluate_pairs(pairs, spec, nsd_tolerance_mm=args.nsd_tolerance, brats=args.brats, lesion_wise=lesion_wise)
    out = Path(args.out) if args.out else Path(args.pred).resolve().parent / "evaluation"
    images = find_images(args.images, [c for c, _, _ in pairs]) if args.images else None
    written = write_report(rows, spec, out, images=images)
    print(markdown_table(summarize(rows, spec), centroids=spec.task == "biplanar"))
    print(f"\nreport: {', '.join(str(p) for p in written.values())}")
    return 0
