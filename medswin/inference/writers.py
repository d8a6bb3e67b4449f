"""Output formats of a prediction, behind one table: ``OUTPUT_FORMATS[name]`` = ending + writer.

* ``nifti``: the label map with the input's affine (``.nii.gz``), written atomically;
* ``dicom-seg``: a DICOM Segmentation object referencing the input series (``.dcm``; needs the
  ``[dicom]`` extra and a DICOM series folder as input).

``medswin predict --format`` takes its choices from this table.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.errors import DataError

if TYPE_CHECKING:
    from ..data.spec import DatasetSpec
    from .predictor import Prediction


@dataclass(frozen=True)
class OutputFormat:
    """A prediction writer: its file ``ending``, ``write(prediction, path, spec, series_uid) -> path``, and
    whether it needs a DICOM series folder as input (checked before anything is predicted)."""

    ending: str
    write: Callable[[Prediction, Path, DatasetSpec, str | None], Path]
    needs_dicom_series: bool = False

    def check_input(self, source: str | os.PathLike) -> None:
        """Raise :class:`DataError` when ``source`` cannot be written in this format."""
        if self.needs_dicom_series and not Path(source).is_dir():
            raise DataError(source, "--format dicom-seg needs a DICOM series folder as input")


def write_nifti_prediction(pred: Prediction, path: Path, spec: DatasetSpec, series_uid: str | None = None) -> Path:
    """The label map as NIfTI with the input's affine."""
    from ..data.io import write_nifti

    return write_nifti(pred.labels, pred.affine, path)


def write_dicom_seg_prediction(pred: Prediction, path: Path, spec: DatasetSpec, series_uid: str | None = None) -> Path:
    """The label map as a DICOM-SEG referencing the input series (one segment per predicted label)."""
    from .dicom_seg import write_dicom_seg

    OUTPUT_FORMATS["dicom-seg"].check_input(pred.source)
    if not np.any(pred.labels):
        raise DataError(pred.source, "the prediction is empty; a DICOM-SEG needs at least one segment")
    names = {v: k for k, v in spec.labels.items() if v != 0}
    return write_dicom_seg(pred.labels, pred.source, path, names, series_uid=series_uid)


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "nifti": OutputFormat(".nii.gz", write_nifti_prediction),
    "dicom-seg": OutputFormat(".dcm", write_dicom_seg_prediction, needs_dicom_series=True),
}


def output_format(name: str) -> OutputFormat:
    """The format called ``name``; unknown names list the known ones."""
    if name not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {name!r}; use {' or '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[name]


def output_path(out_dir: str | os.PathLike, case: str, fmt: str) -> Path:
    """Where the prediction of ``case`` goes in ``out_dir``: ``{case}{ending}``."""
    return Path(out_dir) / f"{case}{output_format(fmt).ending}"
