"""DICOM series folders: group a folder's files by series and check a series from its headers.

:func:`inspect_dicom_series` reads the headers only (no pixel data) and reports, as one
:class:`~medswin.data.errors.DataError` naming the folder or the file, several series (pick one with
``series_uid``), slices without or with truncated pixel data, missing geometry, mixed orientations,
slice sizes or pixel spacings, duplicate or missing slices and uneven spacing.  The readers in
:mod:`medswin.data.io` call it before reading any pixel.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .formats import VOLUME_ENDINGS
from .headers import check_size, out_of_memory, short_error

log = logging.getLogger(__name__)

SLICE_GAP_FACTOR = 1.5  # a gap this many times the usual spacing means missing slices
SPACING_ERROR_TOLERANCE = 0.1  # relative deviation of one slice step above which the series is rejected
SPACING_WARNING_TOLERANCE = 1e-3  # ... and above which it is accepted with a warning
PIXEL_SPACING_TOLERANCE = 1e-4  # relative difference of PixelSpacing between slices of one series

_UNCOMPRESSED_SYNTAXES = (
    "",
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian (pydicom inflates the whole dataset)
    "1.2.840.10008.1.2.2",  # explicit VR big endian
)


@dataclass(frozen=True)
class DicomSeries:
    """A checked DICOM series: its files sorted by position along the slice normal (ascending).

    ``rows``/``columns`` and ``pixel_spacing`` (row, column spacing in mm) are shared by every slice;
    ``transfer_syntaxes`` lists the transfer syntax UIDs its files use.
    """

    uid: str
    description: str
    files: tuple[Path, ...]
    positions: tuple[float, ...]
    spacing: float | None
    rows: int = 0
    columns: int = 0
    pixel_spacing: tuple[float, float] | None = None
    transfer_syntaxes: tuple[str, ...] = ()

    @property
    def compressed_syntaxes(self) -> tuple[str, ...]:
        """The transfer syntaxes of the series whose pixel data needs a decoder (JPEG, JPEG 2000, RLE, ...)."""
        return tuple(uid for uid in self.transfer_syntaxes if uid not in _UNCOMPRESSED_SYNTAXES)


def _read_header(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, defer_size="64 KB")
        ds.get("SeriesInstanceUID")  # decoded lazily: a corrupt element fails here, inside the try
        return ds
    except InvalidDicomError:
        return None
    except Exception as exc:  # truncated / corrupt files
        raise DataError(path, f"unreadable DICOM file ({short_error(exc)})") from None


def _pixel_bytes_expected(ds: Any) -> int:
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    return int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1)) * frames * int(ds.BitsAllocated) // 8


def _transfer_syntax(ds: Any) -> str:
    return str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")


def _syntax_label(uid: str) -> str:
    """``"JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)"``, or the bare UID when pydicom does not know it."""
    from pydicom.uid import UID

    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else f"transfer syntax {uid}"


def _pixel_spacing(path: Path, ds: Any) -> tuple[float, float]:
    if "PixelSpacing" not in ds or ds.PixelSpacing in (None, ""):
        raise DataError(path, "missing PixelSpacing: the in-plane voxel size is unknown")
    raw = ds.PixelSpacing
    try:
        values = tuple(float(v) for v in (raw if isinstance(raw, Sequence) and not isinstance(raw, str) else [raw]))
    except (TypeError, ValueError):
        raise DataError(path, f"PixelSpacing {raw!r} is not two numbers") from None
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise DataError(path, f"PixelSpacing {list(values)} mm is not two positive numbers")
    return values  # type: ignore[return-value]


def _numbers(path: Path, ds: Any, keyword: str, count: int) -> np.ndarray:
    """The ``count`` finite numbers of a multi-valued DICOM element, or a :class:`DataError` saying what it holds."""
    raw = ds.get(keyword)
    values = raw if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)) else [raw]
    try:
        out = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(path, f"{keyword} {raw!r} is not {count} numbers") from None
    if out.shape != (count,) or not np.all(np.isfinite(out)):
        raise DataError(path, f"{keyword} {out.round(4).tolist()} is not {count} finite numbers")
    return out


def _check_slice(path: Path, ds: Any) -> tuple[np.ndarray, tuple[int, int], tuple[float, float], np.ndarray]:
    """Per-file checks; returns the slice's orientation, (Rows, Columns), PixelSpacing and position.  A header
    pydicom cannot even decode (a corrupt value representation) is one :class:`DataError` too."""
    try:
        return _check_slice_fields(path, ds)
    except DataError:
        raise
    except Exception as exc:  # pydicom decodes elements lazily: a corrupt one raises anything on first access
        raise DataError(path, f"corrupt DICOM header ({short_error(exc)})") from None


def _check_slice_fields(path: Path, ds: Any) -> tuple[np.ndarray, tuple[int, int], tuple[float, float], np.ndarray]:
    if "PixelData" not in ds or ds["PixelData"].value in (None, b""):
        raise DataError(path, "DICOM file has no pixel data")
    if any(getattr(ds, key, None) in (None, "") for key in ("Rows", "Columns", "BitsAllocated")):
        raise DataError(path, "missing Rows/Columns/BitsAllocated: the pixel data cannot be sized")
    rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    if rows < 1 or columns < 1 or bits not in (1, 8, 16, 32, 64):
        raise DataError(path, f"Rows {rows}, Columns {columns}, BitsAllocated {bits}: not an image size")
    expected = _pixel_bytes_expected(ds)
    stored = ds["PixelData"].length if hasattr(ds["PixelData"], "length") else len(ds.PixelData)
    if _transfer_syntax(ds) in _UNCOMPRESSED_SYNTAXES and stored not in (0xFFFFFFFF,) and stored < expected:
        raise DataError(path, f"pixel data truncated ({stored} of {expected} bytes)")
    if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
        raise DataError(path, "missing ImageOrientationPatient/ImagePositionPatient: cannot place the slice")
    orientation = _numbers(path, ds, "ImageOrientationPatient", 6)
    position = _numbers(path, ds, "ImagePositionPatient", 3)
    row, col = orientation[:3], orientation[3:]
    if (
        orientation.shape != (6,)
        or not np.all(np.isfinite(orientation))
        or abs(np.linalg.norm(row) - 1) > 1e-2
        or abs(np.linalg.norm(col) - 1) > 1e-2
        or abs(float(np.dot(row, col))) > 1e-2
    ):
        raise DataError(
            path, f"ImageOrientationPatient {orientation.round(4).tolist()} is not two perpendicular unit vectors"
        )
    return orientation, (rows, columns), _pixel_spacing(path, ds), position


def check_dicom_file(path: Path) -> None:
    """The checks of one slice (header, pixel data size, geometry) for a single ``.dcm`` file, before SimpleITK's
    DICOM reader sees it: a corrupt header can make that reader allocate gigabytes before it gives up."""
    ds = _read_header(path)
    if ds is None:
        raise DataError(path, "not a DICOM file (no DICOM header pydicom can read)")
    _check_slice(path, ds)
    check_size(path, (int(ds.Rows), int(ds.Columns), int(getattr(ds, "NumberOfFrames", 1) or 1)), 1)


def _check_same_grid(folder: Path, items: list[tuple[Path, Any]], sizes: list, spacings: list) -> None:
    """Every slice has the first one's Rows/Columns and PixelSpacing."""
    first = items[0][0].name
    for (path, _), size, spacing in zip(items, sizes, spacings):
        if size != sizes[0]:
            raise DataError(
                folder,
                f"slices of different size: {first} is {sizes[0][0]}x{sizes[0][1]} (Rows x Columns), "
                f"{path.name} is {size[0]}x{size[1]}",
            )
        relative = max(abs(a - b) / b for a, b in zip(spacing, spacings[0]))
        if relative > PIXEL_SPACING_TOLERANCE:
            raise DataError(
                folder,
                f"inconsistent pixel spacing: {first} has {list(spacings[0])} mm, {path.name} has {list(spacing)} mm",
            )


def list_dicom_series(folder: str | os.PathLike) -> dict[str, list[tuple[Path, Any]]]:
    """Group the DICOM files of ``folder`` (not recursive) by SeriesInstanceUID; other files are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "not a folder")
    series: dict[str, list[tuple[Path, Any]]] = {}
    skipped = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name.upper() == "DICOMDIR":
            continue
        ds = _read_header(path)
        if ds is None or "SeriesInstanceUID" not in ds:
            skipped.append(path.name)
            continue
        series.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    if skipped:
        log.warning("%s: skipped %d non-DICOM file(s): %s", folder, len(skipped), ", ".join(skipped[:5]))
    if not series:
        raise DataError(folder, "no DICOM files in this folder")
    return series


def inspect_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> DicomSeries:
    """Check a DICOM series folder and return its slices in order; raise :class:`DataError` on any problem.

    Checks: one series (or ``series_uid`` chosen), pixel data present and complete, Rows/Columns and
    a positive PixelSpacing on every slice and the same on all, one orientation, positions present,
    no duplicate positions, no missing slices (gaps > 1.5x the usual step), even spacing (deviation
    > 10% is an error, > 0.1% a warning).
    """
    folder = Path(folder)
    groups = list_dicom_series(folder)
    if series_uid is None and len(groups) > 1:
        listing = "; ".join(
            f"{uid} ({getattr(items[0][1], 'SeriesDescription', '') or 'no description'}, {len(items)} files)"
            for uid, items in groups.items()
        )
        raise DataError(folder, f"contains {len(groups)} DICOM series, choose one with series_uid=...: {listing}")
    if series_uid is not None and series_uid not in groups:
        raise DataError(folder, f"no series {series_uid!r} here; available: {', '.join(groups)}")
    uid = series_uid or next(iter(groups))
    items = groups[uid]

    checked = [_check_slice(path, ds) for path, ds in items]
    orientations = [c[0] for c in checked]
    ref = orientations[0]
    for (path, _), ori in zip(items, orientations):
        if not np.allclose(ori, ref, atol=1e-4):
            raise DataError(
                folder,
                f"inconsistent slice orientation: {items[0][0].name} has {ref.round(4).tolist()}, "
                f"{path.name} has {ori.round(4).tolist()}",
            )
    _check_same_grid(folder, items, [c[1] for c in checked], [c[2] for c in checked])
    normal = np.cross(ref[:3], ref[3:])
    pos = np.array([float(np.dot(normal, c[3])) for c in checked])
    order = np.argsort(pos, kind="stable")
    pos, files = pos[order], [items[i][0] for i in order]
    spacing = None
    if len(pos) > 1:
        steps = np.diff(pos)
        dup = np.where(steps < 1e-3)[0]
        if len(dup):
            i = int(dup[0])
            raise DataError(
                folder, f"duplicate slices at position {pos[i]:.3f} mm: {files[i].name} and {files[i + 1].name}"
            )
        spacing = float(np.median(steps))
        gaps = np.where(steps > SLICE_GAP_FACTOR * spacing)[0]
        if len(gaps):
            i = int(gaps[0])
            missing = round(steps[i] / spacing) - 1
            raise DataError(
                folder,
                f"missing slice(s): gap of {steps[i]:.3f} mm between {files[i].name} ({pos[i]:.3f}) and "
                f"{files[i + 1].name} ({pos[i + 1]:.3f}), usual step {spacing:.3f} mm (~{missing} missing)",
            )
        deviation = float(np.max(np.abs(steps - spacing)) / spacing)
        if deviation > SPACING_ERROR_TOLERANCE:
            raise DataError(folder, f"uneven slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm")
        if deviation > SPACING_WARNING_TOLERANCE:
            warnings.warn(
                f"{folder}: slice spacing varies by {100 * deviation:.2f}% (median {spacing:.4f} mm)", stacklevel=2
            )
    description = str(getattr(items[0][1], "SeriesDescription", ""))
    syntaxes = tuple(dict.fromkeys(_transfer_syntax(ds) for _, ds in items))
    rows, columns = checked[0][1]
    return DicomSeries(
        uid, description, tuple(files), tuple(float(p) for p in pos), spacing, rows, columns, checked[0][2], syntaxes
    )


def inspect_for_reading(folder: Path, series_uid: str | None) -> DicomSeries:
    """:func:`inspect_dicom_series` plus the voxel limit (4 bytes a voxel once rescaled), before a reader runs.

    Args:
        folder: the series folder.
        series_uid: the series to read when the folder holds several.
    """
    series = inspect_dicom_series(folder, series_uid)
    check_size(folder, (series.columns, series.rows, len(series.files)), 4)
    return series


def series_error(folder: Path, series: DicomSeries, exc: BaseException, prefix: str) -> DataError:
    """The :class:`DataError` for an exception raised while reading a checked series' pixels.

    Args:
        folder: the series folder.
        series: the series being read (its size and transfer syntaxes shape the message).
        exc: what the reader raised (``MemoryError`` included).
        prefix: the message for an uncompressed series, e.g. ``"cannot read"``.
    """
    if isinstance(exc, MemoryError):
        return out_of_memory(folder, (series.columns, series.rows, len(series.files)))
    if series.compressed_syntaxes:
        label = _syntax_label(series.compressed_syntaxes[0])
        return DataError(folder, f"cannot decode the {label} pixel data ({short_error(exc)})")
    return DataError(folder, f"{prefix} ({short_error(exc)})")


def check_pydicom_decoders(folder: Path, series: DicomSeries) -> None:
    """Raise :class:`DataError` unless each compressed transfer syntax of the series has a pydicom decoder
    with its plugins installed.

    Args:
        folder: the series folder (named in the message).
        series: the checked series.
    """
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom < 3: the read itself reports it
        return
    for uid in series.compressed_syntaxes:
        try:
            decoder = get_decoder(uid)
        except (NotImplementedError, ValueError):
            raise DataError(
                folder, f"pydicom cannot decode {_syntax_label(uid)} pixel data: read it with reader='sitk'"
            ) from None
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies)
            raise DataError(
                folder,
                f"pydicom cannot decode {_syntax_label(uid)} pixel data without a plugin ({missing}): "
                "install one, or read with reader='sitk'",
            )


def is_series_folder(path: Path) -> bool:
    """True for a folder not named like a volume file (``scan.nii.gz/`` is a mistake, reported by
    :func:`medswin.data.sniff.sniff`)."""
    try:
        return path.is_dir() and not path.name.lower().endswith(VOLUME_ENDINGS)
    except OSError:  # a name the file system cannot hold: sniff() says what is wrong
        return False
