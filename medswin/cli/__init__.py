"""``medswin`` command line: ``main(argv) -> exit code``; one module per subcommand.

Every failure the user can fix (bad input, bad option, bad config) ends in ONE line on stderr,
``medswin COMMAND: error: <file>: <problem>``, and exit code 2; anything else (a bug, the
environment) in one line and exit code 1.  ``--verbose`` (before or after the subcommand) shows
debug logging and the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..data.errors import DataError, root_data_error
from . import adapt, bundle, data, demo, evaluate, export, models, predict, pretrain, train

SUBCOMMANDS = (models, data, pretrain, train, predict, adapt, evaluate, export, demo, bundle)
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, TypeError, ImportError, DataError, PermissionError)


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand (and sub-subcommand) accepts, before or after its name."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging and tracebacks"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from .. import __version__

    parser = OneLineErrors(prog="medswin", description="Shifted-window transformers for 3D medical images.")
    parser.add_argument("--version", action="version", version=f"medswin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_SubParser)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


class OneLineErrors(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the problem and where ``--help`` is), exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (<prog> --help lists the options)`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")


class _SubParser(OneLineErrors):
    """Subcommand parsers: they take the common options too (``medswin models list --verbose``)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("parents", [])
        kwargs["parents"] = [*kwargs["parents"], common_options()]
        super().__init__(*args, **kwargs)


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return " ".join(str(exc).split()) or type(exc).__name__


def _user_error(exc: BaseException) -> BaseException | None:
    """The user-fixable error behind ``exc`` (MONAI and torch wrap data errors in RuntimeError chains), if any."""
    return root_data_error(exc) or (exc if isinstance(exc, USER_ERRORS) else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (errors print one clear line, exit 2)."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("matplotlib", "PIL", "h5py", "fsspec"):  # their debug logs would drown medswin's own
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"medswin {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        user = _user_error(exc)
        if user is not None:
            print(f"medswin {args.command}: error: {_message(user)}", file=sys.stderr)
            return 2
        if isinstance(exc, MemoryError):
            print(
                f"medswin {args.command}: error: out of memory (try a smaller --roi or --memory-budget-gb)",
                file=sys.stderr,
            )
            return 2
        print(
            f"medswin {args.command}: error: {type(exc).__name__}: {_message(exc)[:300]} "
            "(rerun with --verbose for the traceback)",
            file=sys.stderr,
        )
        return 1
