"""DICOM Segmentation (DICOM-SEG) output for predictions made on a DICOM series.

When the input of a prediction is a DICOM series, the natural output is a DICOM Segmentation
object that references the source images: PACS, viewers (OHIF, 3D Slicer, ...) and downstream
tools then place it on the right slices without any guess about orientation.  :func:`write_dicom_seg`
turns an integer label map into a *binary* ``highdicom.seg.Segmentation`` (one segment per named
foreground label) and writes it atomically.

Shapes and ordering:

* ``labels`` is ``(X, Y, Z)``, on the grid of ``medswin.data.io.load_volume(series_folder,
  series_uid)`` (SimpleITK reader): index ``k`` along ``Z`` is ``inspect_dicom_series(...).files[k]``
  (ascending position along the slice normal), ``i`` along ``X`` runs along the DICOM row direction
  (columns of the pixel matrix) and ``j`` along ``Y`` along the column direction (rows of the pixel
  matrix), so ``labels[:, :, k].T`` is the ``(Rows, Columns)`` pixel matrix of slice ``k``;
* highdicom receives ``(frames, Rows, Columns)``, frame ``k`` = source file ``k`` in that same
  order; highdicom takes each frame's position and orientation from its source image.

Segment coding: every segment gets the generic segmented property category SCT 85756007
"Tissue" (CID 7150) and type SCT 91772007 "Organ" (CID 7166, "Segmentation Property Types for
Tissue"); the segment's meaning is carried by its Segment Label (the label name).  Segments are
numbered 1..N in ascending label value.

highdicom is an optional dependency (``pip install 'medswin[dicom]'``) imported only on use.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.atomic import atomic_write

__all__ = ["SEGMENT_CATEGORY", "SEGMENT_TYPE", "SERIES_DESCRIPTION", "SERIES_NUMBER", "write_dicom_seg"]

SERIES_DESCRIPTION = "medswin segmentation"
SERIES_NUMBER = 300
MANUFACTURER = "medswin"
DEVICE_SERIAL_NUMBER = "0"  # required by highdicom (type 1); there is no device, so a placeholder
# (code value, coding scheme, meaning): generic SNOMED CT codes valid in CID 7150 / CID 7166.
SEGMENT_CATEGORY = ("85756007", "SCT", "Tissue")
SEGMENT_TYPE = ("91772007", "SCT", "Organ")
_MAX_LO_LENGTH = 64  # Segment Label is a LO (long string) element


def _import_highdicom() -> Any:
    try:
        import highdicom
    except ImportError as exc:
        raise ImportError(
            "writing DICOM-SEG needs the optional 'highdicom' package: pip install 'medswin[dicom]'"
        ) from exc
    return highdicom


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3D (X, Y, Z) label map, got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if np.issubdtype(labels.dtype, np.integer):
        return labels
    if np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    raise ValueError(f"labels must be an integer label map, got dtype {labels.dtype} with non-integer values")


def write_dicom_seg(
    labels: np.ndarray,
    series_folder: str | os.PathLike,
    out_path: str | os.PathLike,
    label_names: Mapping[int, str],
    series_uid: str | None = None,
    algorithm_name: str = "medswin",
    algorithm_version: str = __version__,
) -> Path:
    """Write the label map ``labels`` as a binary DICOM-SEG referencing the series in ``series_folder``.

    Args:
        labels: integer label map ``(X, Y, Z)`` on the grid of ``load_volume(series_folder, series_uid)``
            (i.e. the prediction already resampled back to the input grid); ``X`` = Columns,
            ``Y`` = Rows, ``Z`` = slices in ascending position along the slice normal.  0 is background.
        series_folder: folder holding the source DICOM series (checked with ``inspect_dicom_series``).
        out_path: file to write (usually ``.dcm``); parent folders are created; an existing file at
            this path is replaced atomically, nothing else is touched.
        label_names: label value -> segment label (name).  Every foreground value present in
            ``labels`` must be named; named values absent from ``labels`` produce no segment;
            the value 0 (background) never becomes a segment.
        series_uid: which series of ``series_folder`` to reference when it holds several.
        algorithm_name, algorithm_version: recorded in each segment's Algorithm Identification
            Sequence (family DCM 123110 "Artificial Intelligence") and as model name / software version.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``labels`` is not an integer 3D map, its shape is not ``(Columns, Rows, n_slices)``
            of the series, it contains unnamed foreground values, or it has no named foreground at all.
        medswin.data.errors.DataError: the series folder is not a usable DICOM series.
        ImportError: highdicom is not installed.

    The SEG has segments numbered 1..N in ascending label value, labelled with ``label_names``,
    algorithm type AUTOMATIC, category SCT "Tissue" / type SCT "Organ", a new series
    (number 300, description "medswin segmentation") and SOP instance (number 1); empty frames
    are omitted.
    """
    hd = _import_highdicom()
    import pydicom
    from pydicom.sr.codedict import codes

    from ..data.io import inspect_dicom_series

    labels = _check_labels(labels)
    series_folder = Path(series_folder)
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ValueError(f"{out_path}: is a folder; give the path of the DICOM-SEG file to write")

    series = inspect_dicom_series(series_folder, series_uid)
    # Full headers without pixel data: highdicom only needs the image attributes.
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    for path, ds in zip(series.files, sources):
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            raise ValueError(f"{path}: multi-frame source images are not supported (one slice per file expected)")
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)  # every slice's (inspect_dicom_series checks)
    expected = (columns, rows, len(sources))
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match the series in {series_folder} "
            f"(expected (Columns, Rows, slices) = {expected}); is the prediction on the load_volume grid?"
        )

    names = {int(v): str(n) for v, n in label_names.items()}
    present = [int(v) for v in np.unique(labels) if v != 0]
    unnamed = [v for v in present if v not in names]
    if unnamed:
        raise ValueError(f"label values {unnamed} are in the label map but not in label_names {sorted(names)}")
    values = sorted(present)  # named, present, foreground
    if not values:
        raise ValueError("the label map has no foreground label: a DICOM-SEG needs at least one segment")
    for v in values:
        if not names[v].strip() or len(names[v]) > _MAX_LO_LENGTH:
            raise ValueError(f"label name {names[v]!r} of value {v} must be 1 to {_MAX_LO_LENGTH} characters")

    # Segment numbers 1..N in ascending label value; (X, Y, Z) -> (frames = Z, Rows = Y, Columns = X).
    lut_dtype = np.uint8 if len(values) < 256 else np.uint16
    segment_map = np.zeros(labels.shape, dtype=lut_dtype)
    for number, value in enumerate(values, start=1):
        segment_map[labels == value] = number
    pixel_array = np.ascontiguousarray(segment_map.transpose(2, 1, 0))

    category = hd.sr.CodedConcept(*SEGMENT_CATEGORY)
    property_type = hd.sr.CodedConcept(*SEGMENT_TYPE)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=str(algorithm_version)
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=names[value],
            segmented_property_category=category,
            segmented_property_type=property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, value in enumerate(values, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm_name,
        software_versions=str(algorithm_version),
        device_serial_number=DEVICE_SERIAL_NUMBER,
        series_description=SERIES_DESCRIPTION,
    )

    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.parent.resolve() == series_folder.resolve():
        warnings.warn(
            f"{out_path}: writing the DICOM-SEG into the source series folder makes it a two-series folder",
            stacklevel=2,
        )
    return atomic_write(out_path, seg.save_as)
