"""``medswin models [PATTERN]``: the model table; ``medswin models --info NAME``: one model's facts."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand."""
    p = sub.add_parser("models", help="list registered models (params, size divisor, default roi)")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'swin_unetr_*'")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--out-channels", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON) of models matching the pattern."""
    from ..models import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; try 'medswin models'")
    infos = [model_info(n, args.in_channels, args.out_channels) for n in names]
    if args.json:
        print(json.dumps(infos, indent=2, default=list))
        return 0
    print(f"{'model':<22} {'params':>10} {'divisor':>8} {'default roi':>14}  paper")
    for info in infos:
        roi = "x".join(map(str, info["default_roi"]))
        print(f"{info['name']:<22} {info['params'] / 1e6:>9.2f}M {info['size_divisor']:>8} {roi:>14}  {info['paper']}")
    return 0
