"""Outputs never replace inputs: the check that runs before anything is written.

:func:`check_outputs` refuses an output that resolves (symbolic links followed) to an input file,
an output inside an input DICOM series folder (it would become a two-series folder), and, unless
allowed, an output inside a folder of input cases (predictions mixed with the scans, or written
over them when names collide).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError

ALLOW_FLAG = "--allow-output-in-input"


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outputs(
    outputs: Iterable[str | os.PathLike],
    sources: Iterable[str | os.PathLike],
    input_folders: Iterable[str | os.PathLike] = (),
    allow_inside_input_folder: bool = False,
) -> None:
    """Raise :class:`DataError` (naming the output) when writing ``outputs`` could touch an input.

    Args:
        outputs: the files (and folders) about to be written.
        sources: what is read: volume files and DICOM series folders.
        input_folders: folders of cases given as input (a dataset or a folder of volumes).
        allow_inside_input_folder: let outputs lie inside ``input_folders`` (never inside a DICOM series
            folder, never onto a source file).
    """
    files, series = [], []
    for item in sources:
        real = _real(item)
        (series if real.is_dir() else files).append((Path(item), real))
    folders = [(Path(f), _real(f)) for f in input_folders]
    for out in outputs:
        target = _real(out)
        for given, real in files:
            if target == real:
                raise DataError(out, f"is the input {given}: an output never replaces an input, choose another name")
        for given, real in series:
            if _inside(target, real):
                raise DataError(out, f"lies inside the input DICOM series folder {given}: write it elsewhere")
        for given, real in folders:
            if _inside(target, real) and not allow_inside_input_folder:
                raise DataError(
                    out, f"lies inside the input folder {given}: choose another output folder (or pass {ALLOW_FLAG})"
                )
