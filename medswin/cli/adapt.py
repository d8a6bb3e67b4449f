"""``medswin adapt -i CASES -o OUT --model CHECKPOINT --method tent|etta``: adapt to each case, then segment it.

The same inputs and model options as ``medswin predict``; each volume is adapted to (TENT or ETTA,
:mod:`medswin.adaptation`) before it is predicted with the adapted parameters.  Episodic by default
(the model is reset before every case); ``--continual`` keeps adapting across the cases in order.
Labels go to ``OUT/{case}.nii.gz``, and what each adaptation did (losses per step, windows,
seconds) to ``OUT/adaptation.json`` (written atomically).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .predict import (
    ADAPT_METHODS,
    add_adaptation_arguments,
    add_predictor_arguments,
    build_adapter,
    build_predictor,
    load_model_arg,
    plan_outputs,
)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``adapt`` subcommand."""
    p = sub.add_parser("adapt", help="test-time adaptation (TENT/ETTA) to each case, then segment it")
    p.add_argument("-i", "--input", required=True, help="a volume, a DICOM series folder, or a folder/dataset of cases")
    p.add_argument("-o", "--output", required=True, help="output folder ({case}.nii.gz and adaptation.json)")
    p.add_argument("--method", dest="adapt", default="tent", choices=ADAPT_METHODS, help="adaptation method (tent)")
    add_predictor_arguments(p)
    add_adaptation_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Adapt to and predict every case; print the written files."""
    from tqdm import tqdm

    from ..data.atomic import write_text_atomic
    from ..data.inputs import resolve_inputs
    from ..data.outputs import check_outputs

    kind, ckpt = load_model_arg(args)
    if kind != "volume":
        raise ValueError(
            f"{args.model}: test-time adaptation works on 3D volume models, not on biplanar (two X-ray view) models"
        )
    out = Path(args.output)
    if out.name.endswith((".nii", ".nii.gz", ".dcm", ".json")):
        raise ValueError(f"-o {args.output}: medswin adapt writes a folder (labels and adaptation.json), give a folder")
    predictor = build_predictor(args, ckpt)
    adapter = build_adapter(args, predictor)
    cases = resolve_inputs(args.input, predictor.spec)
    outputs = plan_outputs(args, cases, "nifti")
    check_outputs([out / "adaptation.json"], [p for _, paths in cases for p in paths])
    records, written = [], []
    bar = tqdm(zip(cases, outputs), total=len(cases), desc=f"{args.adapt} + predict", disable=len(cases) < 2)
    for (case, paths), target in bar:
        if args.skip_existing and target.is_file():
            log.info("%s exists: skipped", target)
            written.append(target)
            records.append({"case": case, "output": str(target), "skipped": True})
            continue
        written.append(predictor.predict_file(paths if len(paths) > 1 else paths[0], target))
        records.append({"case": case, "output": str(written[-1]), **adapter.last_report.as_dict()})
        log.info("%s -> %s", case, written[-1])
    settings = {
        "method": args.adapt,
        "episodic": adapter.episodic,
        "steps": adapter.steps,
        "lr": adapter.lr,
        "max_patches": adapter.max_patches,
        "parameters": adapter.parameter_names,
    }
    if args.adapt == "etta":
        settings["entropy_filter"] = adapter.entropy_filter
    report = write_text_atomic(
        out / "adaptation.json", json.dumps({"model": args.model, "settings": settings, "cases": records}, indent=2)
    )
    for path in written:
        print(path)
    print(report)
    return 0
