"""``medswin models list [PATTERN]`` (the model table) and ``medswin models info NAME`` (one model)."""

from __future__ import annotations

import argparse
import json


KIND_TEXT = {
    "volume": "3D volumes in, logits of the same size out",
    "biplanar": "two 2D X-ray views in, a 3D volume out",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``models list`` and ``models info``."""
    p = sub.add_parser("models", help="registered models: list (the default), info")
    p.set_defaults(func=run_list, pattern="*", in_channels=1, out_channels=2, json=False)
    models_sub = p.add_subparsers(dest="models_command", required=False, metavar="SUBCOMMAND")
    ls = models_sub.add_parser("list", help="table of models (params, size divisor, default roi, paper)")
    ls.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'swin_unetr_*'")
    ls.add_argument("--in-channels", type=int, default=1)
    ls.add_argument("--out-channels", type=int, default=2)
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=run_list)
    info = models_sub.add_parser("info", help="one model: parameters, preset, constructor arguments")
    info.add_argument("name")
    info.add_argument("--in-channels", type=int, default=1)
    info.add_argument("--out-channels", type=int, default=2)
    info.set_defaults(func=run_info)


def run_list(args: argparse.Namespace) -> int:
    """Print the table (or JSON) of models matching the pattern."""
    from ..models import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; try 'medswin models list'")
    infos = [model_info(n, args.in_channels, args.out_channels) for n in names]
    if args.json:
        print(json.dumps(infos, indent=2, default=list))
        return 0
    print(f"{'model':<22} {'kind':<9} {'params':>10} {'divisor':>8} {'default roi':>14}  paper")
    for info in infos:
        roi = "x".join(map(str, info["default_roi"]))
        print(
            f"{info['name']:<22} {info['kind']:<9} {info['params'] / 1e6:>9.2f}M {info['size_divisor']!s:>8} {roi:>14}  "
            f"{info['paper']}"
        )
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print one model's facts and the keyword arguments ``create_model`` accepts for it."""
    from ..models import model_info, valid_kwargs

    info = model_info(args.name, args.in_channels, args.out_channels)
    print(f"{info['name']}: {info['params']:,} parameters ({args.in_channels} -> {args.out_channels} channels)")
    print(f"  kind:         {info['kind']} ({KIND_TEXT[info['kind']]})")
    print(f"  paper:        {info['paper']}")
    print(f"  size divisor: {info['size_divisor']} (every spatial size of the input must be a multiple)")
    print(f"  default roi:  {'x'.join(map(str, info['default_roi']))}")
    print(f"  preset:       {json.dumps(info['preset'])}")
    print(f"  options:      {', '.join(valid_kwargs(args.name))}")
    return 0
