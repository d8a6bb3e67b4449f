"""``medswin adapt -i CASES -o OUT --model CHECKPOINT [--method n4]``: adapt to each case, then segment it.

The same inputs and model options as ``medswin predict``.  The default method, ``n4``, corrects each MRI
volume's bias field before it is normalised (the one measured to help: README "Test-time adaptation");
``histmatch`` / ``n4+histmatch`` map its histogram onto a training image's (``--reference``).  The model-side
methods (TENT, ETTA, MEMO, pseudo-label; :mod:`medswin.adaptation`) adapt the model's parameters to each
volume and predict with them; episodic by default (the model is reset before every case), ``--continual``
keeps adapting across the cases in order.  Labels go to ``OUT/{case}.nii.gz``, and what each adaptation did
(losses per step, windows, seconds) to ``OUT/adaptation.json`` (written atomically).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from .predict import (
    ADAPT_HELP,
    ADAPT_METHODS,
    add_adaptation_arguments,
    add_predictor_arguments,
    build_adapter,
    build_predictor,
    check_adaptation_options,
    load_model_arg,
    plan_outputs,
)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``adapt`` subcommand."""
    p = sub.add_parser(
        "adapt", help="test-time adaptation (N4, histogram matching, TENT, ...) to each case, then segment it"
    )
    p.add_argument("-i", "--input", required=True, help="a volume, a DICOM series folder, or a folder/dataset of cases")
    p.add_argument("-o", "--output", required=True, help="output folder ({case}.nii.gz and adaptation.json)")
    p.add_argument("--method", dest="adapt", default="n4", choices=ADAPT_METHODS, help=ADAPT_HELP + " (default n4)")
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
    check_adaptation_options(args)
    predictor = build_predictor(args, ckpt)
    adapter = build_adapter(args, predictor) if predictor.correction is None else None
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
        start = time.perf_counter()
        written.append(predictor.predict_file(paths if len(paths) > 1 else paths[0], target))
        done = {"seconds": round(time.perf_counter() - start, 3)} if adapter is None else adapter.last_report.as_dict()
        records.append({"case": case, "output": str(written[-1]), **done})
        log.info("%s -> %s", case, written[-1])
    if adapter is None:  # an input-side correction
        settings = {"method": args.adapt, "reference": args.reference}
    else:
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
    if args.adapt == "pseudo-label":
        settings["confidence"] = adapter.threshold
    report = write_text_atomic(
        out / "adaptation.json", json.dumps({"model": args.model, "settings": settings, "cases": records}, indent=2)
    )
    for path in written:
        print(path)
    print(report)
    return 0
