"""``medswin export CHECKPOINT -o model.onnx``: the trained model as an ONNX file that predicts on its own."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = sub.add_parser(
        "export",
        help="export a trained checkpoint to ONNX (dynamic batch; spec and roi in the file) for ONNX Runtime",
        description="Export a medswin training checkpoint to ONNX. The file takes windows (batch, C, *roi) for any "
        "batch and carries the dataset spec, so `medswin predict --model model.onnx` needs nothing else.",
    )
    p.add_argument("checkpoint", help="a medswin training checkpoint (.pt)")
    p.add_argument("-o", "--output", required=True, help="the ONNX file to write (.onnx)")
    p.add_argument("--roi", type=int, nargs=3, metavar=("X", "Y", "Z"), help="window size (default: the checkpoint's)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: medswin's, 20)")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip running the file with ONNX Runtime against PyTorch before writing it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check, and print the file's path."""
    from ..inference.onnx_export import ONNX_OPSET, export_checkpoint

    opset = args.opset or ONNX_OPSET
    if not 18 <= opset <= 23:
        raise ValueError(f"--opset {opset}: the exporter writes opsets 18 to 23")
    done = export_checkpoint(
        args.checkpoint, args.output, tuple(args.roi) if args.roi else None, opset=opset, check=not args.no_check
    )
    check = "" if done.max_abs_diff is None else f", max |ONNX Runtime - PyTorch| {done.max_abs_diff:.1e}"
    print(f"{done.path} (roi {'x'.join(map(str, done.roi_size))}, opset {done.opset}, dynamic batch{check})")
    return 0
