"""``medswin predict -i IN -o OUT --model NAME|CHECKPOINT``: segment a file, a DICOM folder or a folder of cases."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..adaptation import METHOD_NAMES
from ..amp import AMP_CHOICES
from ..data.correction import CORRECTIONS
from ..data.outputs import ALLOW_FLAG
from ..inference.writers import OUTPUT_FORMATS

log = logging.getLogger(__name__)

# input-side corrections first (measured to help: README "Test-time adaptation"), then the model-side adapters
ADAPT_METHODS = (*CORRECTIONS, *METHOD_NAMES)
ADAPT_HELP = (
    "test-time adaptation to each volume before predicting it: n4 (MRI bias field: +0.12 mean Dice under a bias "
    "field on the demo task), histmatch / n4+histmatch (onto --reference's histogram: +0.10 / +0.11 under a "
    "gamma change, n4+histmatch +0.14 under the bias field), or a model-side adapter (tent, etta, memo, "
    "pseudo-label: within +-0.003 under every shift measured; README 'Test-time adaptation')"
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    p = sub.add_parser("predict", help="segment volumes (NIfTI/NRRD/MHA file, DICOM folder, folder of cases)")
    p.add_argument("-i", "--input", required=True, help="a volume, a DICOM series folder, or a folder/dataset of cases")
    p.add_argument("-i2", "--input2", help="the sagittal X-ray view, for biplanar models (then -i is the coronal one)")
    p.add_argument("-o", "--output", required=True, help="output file (one case) or folder")
    p.add_argument(
        "--spacing", type=float, default=1.0, help="biplanar output voxel size when no DRR geometry is found"
    )
    add_predictor_arguments(p)
    p.add_argument("--format", default="nifti", choices=sorted(OUTPUT_FORMATS))
    p.add_argument("--series-uid", help="which series of a DICOM folder holding several")
    p.add_argument("--adapt", choices=ADAPT_METHODS, help=ADAPT_HELP)
    add_adaptation_arguments(p)
    p.set_defaults(func=run)


def add_predictor_arguments(p: argparse.ArgumentParser) -> None:
    """Model, dataset, weights, sliding-window and output-safety options shared by ``predict`` and ``adapt``."""
    p.add_argument(
        "--model",
        required=True,
        help="medswin checkpoint (.pt), a model exported by medswin export (.onnx: run by ONNX Runtime), or a "
        "registered model name (then --dataset)",
    )
    p.add_argument("--dataset", help="dataset spec of the model (needed with a model name)")
    p.add_argument("--datasets", action="append", default=[], metavar="YAML", help="extra dataset entries")
    p.add_argument("--weights", help="weights for a model name: medswin checkpoint or MONAI SwinUNETR state dict")
    p.add_argument("--roi", type=int, nargs=3, metavar=("X", "Y", "Z"))
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--sw-batch-size", default=1, type=sw_batch_size, help="windows per forward pass, or 'auto'")
    p.add_argument("--mirror", action="store_true", help="average over the 8 mirror images of each window (8x slower)")
    p.add_argument("--largest-component", action="store_true", help="keep the largest component of each class")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default: CUDA when available)")
    p.add_argument(
        "--memory-budget-gb",
        type=float,
        default=2.0,
        help="sliding-window accumulator budget; larger volumes are streamed as label slabs (2)",
    )
    p.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    p.add_argument(
        "--reference", metavar="IMAGE", help="histmatch, n4+histmatch: a training image of the same modality"
    )
    p.add_argument(
        ALLOW_FLAG, action="store_true", help="allow writing into the input folder of cases (never over an input)"
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave cases whose output exists (complete: outputs are written atomically); finishes a killed run",
    )


def sw_batch_size(value: str) -> int | str:
    """``--sw-batch-size``: a positive number of windows, or ``auto``."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of windows or 'auto', got {value!r}")
    return number


def add_adaptation_arguments(p: argparse.ArgumentParser) -> None:
    """Test-time adaptation options (``--adapt`` / ``--method`` is added by each subcommand)."""
    p.add_argument("--adapt-steps", type=int, help="steps per volume (default: tent 1, etta 3)")
    p.add_argument("--adapt-lr", type=float, help="learning rate (default: tent Adam 1e-4, etta SGD 0.01)")
    p.add_argument("--adapt-patches", type=int, help="at most this many windows per step (default: tent 8, etta all)")
    p.add_argument("--entropy-filter", type=float, help="etta: only voxels with entropy < this fraction of ln C count")
    p.add_argument(
        "--confidence", type=float, help="pseudo-label: probability a voxel needs to become a pseudo-label (0.9)"
    )
    p.add_argument("--continual", action="store_true", help="keep adapting across volumes (default: reset per volume)")


def check_adaptation_options(args: argparse.Namespace) -> None:
    """The model-side adapter options (``--continual``, ``--adapt-*``, ...) need a model-side ``--adapt`` method."""
    adapt_options = (
        args.continual,
        args.adapt_steps,
        args.adapt_lr,
        args.adapt_patches,
        args.entropy_filter,
        args.confidence,
    )
    if args.adapt not in METHOD_NAMES and any(v not in (None, False) for v in adapt_options):
        raise ValueError(
            f"--continual / --adapt-* / --entropy-filter / --confidence go with --adapt {'|'.join(METHOD_NAMES)}"
            + (f" (--adapt {args.adapt} corrects the input, it trains nothing)" if args.adapt else "")
        )


def build_adapter(args: argparse.Namespace, predictor: Any) -> Any:
    """The ``--adapt`` adapter (TENT or ETTA) on the predictor's model, attached to the predictor."""
    from ..adaptation import METHODS

    if args.entropy_filter is not None and args.adapt != "etta":
        raise ValueError("--entropy-filter is an etta option (use --adapt etta)")
    if args.confidence is not None and args.adapt != "pseudo-label":
        raise ValueError("--confidence is a pseudo-label option (use --adapt pseudo-label)")
    options = {
        "steps": args.adapt_steps,
        "lr": args.adapt_lr,
        "max_patches": args.adapt_patches,
        "entropy_filter": args.entropy_filter,
        "threshold": args.confidence,
    }
    adapter = METHODS[args.adapt](
        predictor.model,
        episodic=not args.continual,
        progress=True,
        **{k: v for k, v in options.items() if v is not None},
    )
    predictor.attach_adapter(adapter)
    return adapter


def load_model_arg(args: argparse.Namespace) -> tuple[str, dict[str, Any] | None]:
    """``(kind, checkpoint)`` of ``--model``: a checkpoint file is read once here (``None`` for a model name)."""
    from ..checkpoint import load_checkpoint
    from ..models import model_kind

    if is_onnx(args.model):
        return "volume", None  # read by build_predictor (ONNX export is for volume models)
    if Path(args.model).exists():
        ckpt = load_checkpoint(args.model)
        return model_kind(ckpt["model_name"]), ckpt
    if args.model.endswith((".pt", ".pth", ".ckpt")):
        raise ValueError(f"{args.model}: checkpoint not found")
    return model_kind(args.model), None


def is_onnx(model: str) -> bool:
    """True when ``--model`` names an ONNX file."""
    return model.lower().endswith(".onnx")


def build_predictor(args: argparse.Namespace, ckpt: dict[str, Any] | None) -> Any:
    """A :class:`Predictor` from a loaded checkpoint, an ONNX file, or a model name + dataset (+ weights)."""
    from ..inference import Predictor

    sw = args.sw_batch_size
    options = {
        "roi_size": tuple(args.roi) if args.roi else None,
        "overlap": args.overlap,
        "sw_batch_size": sw,
        "amp": args.amp,
        "mirror": args.mirror,
        "largest_component": args.largest_component,
        "device": args.device,
        "memory_budget_gb": args.memory_budget_gb,
        "compile": args.compile,
        "correction": input_correction(args),
    }
    if is_onnx(args.model):
        return onnx_predictor(args, options)
    if ckpt is not None:
        if args.weights:
            raise ValueError("--weights goes with a model name; a checkpoint carries its own weights")
        return Predictor.from_checkpoint(ckpt, args.model, **{k: v for k, v in options.items() if v is not None})
    from ..data.spec import get_dataset_spec
    from ..models import create_model, get_entry, load_weights

    if not args.dataset:
        raise ValueError(f"--model {args.model!r} is not a file: give a checkpoint, or a model name with --dataset")
    spec = get_dataset_spec(args.dataset, args.datasets)
    model = create_model(args.model, in_channels=spec.num_channels, out_channels=spec.out_channels)
    if args.weights:
        load_weights(model, args.weights)
    else:
        log.warning("no --weights: %s is untrained, its labels are meaningless", args.model)
    if options["roi_size"] is None and spec.roi_size is None:
        options["roi_size"] = get_entry(args.model).default_roi
    return Predictor(model, spec, **options)


def onnx_predictor(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    """A :class:`Predictor` running ``--model model.onnx`` in ONNX Runtime; the options that need PyTorch
    weights are refused in one line each."""
    from ..inference import Predictor

    for flag, value in (("--weights", args.weights), ("--dataset", args.dataset), ("--datasets", args.datasets)):
        if value:
            raise ValueError(
                f"{flag} does not go with an ONNX model: {args.model} carries its weights and dataset spec"
            )
    if getattr(args, "adapt", None) in METHOD_NAMES:
        raise ValueError(
            f"--adapt {args.adapt} updates PyTorch weights; {args.model} is an ONNX model: use the checkpoint, or an "
            f"input-side correction ({', '.join(CORRECTIONS)})"
        )
    return Predictor.from_onnx(args.model, **{k: v for k, v in options.items() if v is not None})


def input_correction(args: argparse.Namespace) -> Any:
    """The input-side correction of ``--adapt n4|histmatch|n4+histmatch`` (``None`` for the others);
    ``--reference`` goes with the histogram matching ones only."""
    from ..data.correction import InputCorrection

    method = getattr(args, "adapt", None)
    matches = method in CORRECTIONS and method.endswith("histmatch")
    if args.reference and not matches:
        raise ValueError("--reference is the histogram reference of --adapt histmatch / n4+histmatch")
    if method not in CORRECTIONS:
        return None
    if matches and not args.reference:
        raise ValueError(f"--adapt {method} needs --reference IMAGE (a training image of the same modality)")
    return InputCorrection(method, args.reference)


def output_is_file(output: str) -> bool:
    """True when ``-o`` names one output file (a known output ending) rather than a folder."""
    return output.endswith(tuple(f.ending for f in OUTPUT_FORMATS.values()) + (".nii",))


def run_biplanar(args: argparse.Namespace, ckpt: dict[str, Any] | None) -> int:
    """Two X-ray views -> one 3D label volume."""
    from ..inference import BiplanarPredictor

    if args.adapt:
        raise ValueError("--adapt works on 3D volume models, not on biplanar (two X-ray view) models")
    if ckpt is None:
        raise ValueError("biplanar prediction needs a trained Swin-X2S checkpoint (--model run/checkpoint_best.pt)")
    if not args.input2:
        raise ValueError("a biplanar model needs both views: -i CORONAL -i2 SAGITTAL")
    out = Path(args.output)
    if not out.name.endswith((".nii", ".nii.gz")):
        out = out / f"{Path(args.input).name.split('_coronal')[0].split('.')[0]}_labels.nii.gz"
    predictor = BiplanarPredictor.from_checkpoint(ckpt, args.model, amp=args.amp, device=args.device)
    print(predictor.predict_file(args.input, args.input2, out, spacing=args.spacing))
    return 0


def plan_outputs(args: argparse.Namespace, cases: list, fmt: str) -> list[Path]:
    """The file each case is written to, checked against every input before anything is written."""
    from ..data.outputs import check_outputs
    from ..inference.writers import output_path

    out = Path(args.output)
    if output_is_file(args.output):
        if len(cases) != 1:
            raise ValueError(f"{args.input} holds {len(cases)} cases: give an output folder, not a file")
        outputs = [out]
    else:
        outputs = [output_path(out, case, fmt) for case, _ in cases]
    given = Path(args.input)
    sources = [p for _, paths in cases for p in paths]
    folders = [given] if given.is_dir() and given not in sources else []
    check_outputs(outputs + [out], sources, folders, getattr(args, "allow_output_in_input", False))
    return outputs


def run(args: argparse.Namespace) -> int:
    """Resolve the model and the inputs, check the outputs, predict each case, report where they went."""
    from ..data.inputs import resolve_inputs
    from ..distributed import init_distributed

    kind, ckpt = load_model_arg(args)
    if kind == "biplanar" or args.input2:
        if kind != "biplanar":
            raise ValueError(f"-i2 is the second X-ray view of biplanar models; {args.model} takes 3D volumes")
        return run_biplanar(args, ckpt)
    check_adaptation_options(args)
    predictor = build_predictor(args, ckpt)
    if args.adapt in METHOD_NAMES:
        build_adapter(args, predictor)
    cases = resolve_inputs(args.input, predictor.spec)
    outputs = plan_outputs(args, cases, args.format)
    if output_is_file(args.output):
        _, paths = cases[0]
        if args.skip_existing and outputs[0].is_file():
            log.info("%s exists: skipped", outputs[0])
            written = [outputs[0]]
        else:
            source = paths if len(paths) > 1 else paths[0]
            written = [predictor.predict_file(source, outputs[0], args.format, args.series_uid)]
    else:
        info = init_distributed("cpu" if predictor.device.type == "cpu" else "auto")
        written = predictor.predict_cases(
            cases, args.output, args.format, info.rank, info.world_size, skip_existing=args.skip_existing
        )
    for path in written:
        print(path)
    return 0
