"""``medswin`` command line: ``main(argv) -> exit code``; one module per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..data.errors import DataError
from . import adapt, bundle, data, demo, evaluate, models, predict, pretrain, train

SUBCOMMANDS = (models, data, pretrain, train, predict, adapt, evaluate, demo, bundle)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="medswin", description="Shifted-window transformers for 3D medical images.")
    parser.add_argument("--version", action="version", version=f"medswin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (errors print one clear line, exit 2)."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, TypeError, ImportError, DataError) as exc:
        if args.verbose:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"medswin {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except Exception as exc:  # anything else is a bug or an environment problem: still one line
        if args.verbose:
            raise
        print(
            f"medswin {args.command}: error: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)",
            file=sys.stderr,
        )
        return 1
