"""Reading and writing volumes, with checks whose errors name the file and the problem.

Conventions (MONAI's): arrays are channel-first ``(C, X, Y, Z)``, indexed ``[c, i, j, k]``; the
affine maps voxel indices ``(i, j, k)`` to RAS world millimetres.  Every reader returns the same
world coordinates for the same voxel, whatever order it stores slices in.

Readers:

* NIfTI (``.nii``, ``.nii.gz``): nibabel;
* NRRD / MetaImage / NIfTI / DICOM series: :class:`SimpleITKReader`, a MONAI ``ImageReader``, so
  ``LoadImaged(keys, reader=SimpleITKReader())`` works in any MONAI pipeline;
* DICOM series also through MONAI's ``PydicomReader`` (``load_volume(folder, reader="pydicom")``).

Every file is checked in three stages, each failing with one :class:`DataError` that names the file
and the problem, never with a library traceback:

1. its bytes (:func:`medswin.data.sniff.sniff`): exists, readable, not empty, content matching the ending;
2. its header, before any voxel is allocated (:mod:`medswin.data.headers`): 3D (or channels), a
   supported data type, a sane geometry (spacing, affine, qform/sform), a size within
   :func:`~medswin.data.headers.max_voxels` and the machine's memory, and for uncompressed data a
   file long enough to hold it.  A 4D NIfTI whose header marks the 4th dimension as time is read as
   channels and the fact kept in ``Volume.meta["time_axis"]``, so that :func:`check_image` can say so
   when the channel count is wrong;
3. the voxels themselves (``MemoryError`` and library errors become :class:`DataError` too).

A DICOM folder is inspected header by header first
(:func:`~medswin.data.dicom.inspect_dicom_series`): several series (pick one with ``series_uid``),
missing or duplicate slices, uneven spacing, mixed orientations, slice sizes or pixel spacings, and
slices without pixel data are reported before any pixel is read.

Writers are atomic (:func:`medswin.data.atomic.atomic_write`): a temp file in the target folder,
then a rename, so an interrupted run never leaves a truncated output and never half-overwrites a
user's file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import ImageReader

from .atomic import atomic_write
from .dicom import (
    check_dicom_file,
    check_pydicom_decoders,
    inspect_dicom_series,  # noqa: F401  (re-exported: part of medswin.data.io's interface)
    inspect_for_reading,
    is_series_folder,
    list_dicom_series,  # noqa: F401  (re-exported)
    series_error,
)
from .errors import DataError
from .formats import DICOM_ENDINGS, NIFTI_ENDINGS, SITK_VOLUME_ENDINGS
from .headers import check_sitk_header, open_nifti, out_of_memory, precheck_text_header, short_error
from .sniff import FileFacts, sniff

SITK_ENDINGS = SITK_VOLUME_ENDINGS + NIFTI_ENDINGS + DICOM_ENDINGS
"""File endings :class:`SimpleITKReader` reads (from :mod:`medswin.data.formats`)."""

ORTHOGONAL_TOLERANCE = 1e-5
"""Largest |cosine| between two affine columns that :func:`write_nifti` still treats as orthogonal."""


@dataclass
class Volume:
    """A loaded volume: ``array`` ``(C, X, Y, Z)``, RAS ``affine`` (4x4, mm), the source ``path``."""

    array: np.ndarray
    affine: np.ndarray
    path: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(X, Y, Z)``."""
        return tuple(self.array.shape[1:])

    @property
    def channels(self) -> int:
        """Number of channels ``C``."""
        return int(self.array.shape[0])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def world(self, index: Sequence[float]) -> np.ndarray:
        """RAS world coordinates (mm) of voxel ``index`` ``(i, j, k)``."""
        return (self.affine @ np.array([*index, 1.0]))[:3]

    def corner_coordinates(self) -> np.ndarray:
        """World coordinates of the 8 corner voxels, sorted (for comparing readers)."""
        corners = [self.world([a * (n - 1) for a, n in zip(c, self.spatial_shape)]) for c in np.ndindex(2, 2, 2)]
        return np.array(sorted(map(tuple, np.round(corners, 4))))


# ---------------------------------------------------------------------------------------------
# LPS <-> RAS and SimpleITK helpers
# ---------------------------------------------------------------------------------------------

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_affine(image: Any) -> np.ndarray:
    """RAS affine of a SimpleITK image (ITK stores LPS direction, spacing, origin)."""
    nd = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(nd, nd)
    affine = np.eye(4)
    k = min(nd, 3)
    affine[:k, :k] = direction[:k, :k] @ np.diag(np.asarray(image.GetSpacing(), dtype=np.float64)[:k])
    affine[:k, 3] = np.asarray(image.GetOrigin(), dtype=np.float64)[:k]
    return _LPS_TO_RAS @ affine


def sitk_array(image: Any) -> np.ndarray:
    """``(C, X, Y, Z)`` array of a SimpleITK image (SimpleITK gives ``(Z, Y, X[, C])``, or ``(C, Z, Y, X)`` in 4D)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        return np.moveaxis(arr, -1, 0).transpose(0, *range(arr.ndim - 1, 0, -1))
    if image.GetDimension() == 4:  # a 4D scalar image: the 4th axis is channels
        return np.moveaxis(arr.T, -1, 0)
    return arr.T[None]


# ---------------------------------------------------------------------------------------------
# MONAI ImageReader backed by SimpleITK
# MONAI ImageReader backed by SimpleITK
# ---------------------------------------------------------------------------------------------


class SimpleITKReader(ImageReader):
    """MONAI ``ImageReader`` using SimpleITK: NRRD, MetaImage, NIfTI, single DICOM files, DICOM series folders.

    ``LoadImaged(keys, reader=SimpleITKReader())`` gives channel-first-ready arrays in ``(X, Y, Z)``
    order with a RAS affine, like MONAI's ``ITKReader`` (no ``itk`` package needed).  A folder is
    read as a DICOM series after :func:`~medswin.data.dicom.inspect_dicom_series` (``series_uid`` picks one of several).
    A list of files is stacked as channels.  Files are sniffed and their headers checked before any
    voxel is read; every failure raises :class:`DataError`.

    Caveat: MONAI's ``LoadImage`` catches a reader's error and tries its other registered readers, so
    a file this reader rejects may still be read (unchecked) by another one.  medswin's own pipelines
    use :class:`medswin.data.loading.LoadVolumed` instead, which has no fallback.
    """

    def __init__(self, series_uid: str | None = None) -> None:
        super().__init__()
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """True for folders (DICOM series) and the SimpleITK file endings."""
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return all(Path(n).is_dir() or str(n).lower().endswith(SITK_ENDINGS) for n in names)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Read one path (file or series folder) or a list of them; returns SimpleITK image(s)."""
        names = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        images = [self._read_one(Path(n)) for n in names]
        return images[0] if len(images) == 1 else images

    def _read_one(self, path: Path, facts: FileFacts | None = None) -> Any:
        if is_series_folder(path):
            return self._read_series(path)
        facts = facts or sniff(path)
        if facts.ending in NIFTI_ENDINGS:
            open_nifti(path, facts)  # NIfTI header checks (qform/sform, ...): lazy, no voxels
        return self._read_file(path, facts)

    def _read_file(self, path: Path, facts: FileFacts) -> Any:
        import SimpleITK as sitk

        if facts is not None and facts.ending in SITK_VOLUME_ENDINGS:
            precheck_text_header(path, facts)
        elif path.name.lower().endswith(DICOM_ENDINGS):
            check_dicom_file(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except Exception as exc:
            raise DataError(path, f"cannot read ({short_error(exc)})") from None
        check_sitk_header(path, reader, facts)
        try:
            return reader.Execute()
        except MemoryError:
            raise out_of_memory(path, reader.GetSize()) from None
        except Exception as exc:
            raise DataError(path, f"cannot read ({short_error(exc)})") from None

    def _read_series(self, folder: Path) -> Any:
        import SimpleITK as sitk

        series = inspect_for_reading(folder, self.series_uid)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in series.files])
        try:
            return reader.Execute()
        except Exception as exc:  # MemoryError included
            raise series_error(folder, series, exc, "cannot read") from None

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """``(X, Y, Z)`` (or ``(C, X, Y, Z)`` when stacking a list) array and MONAI meta data."""
        from monai.utils import MetaKeys, SpaceKeys

        images = img if isinstance(img, list) else [img]
        arrays, meta = [], {}
        for image in images:
            arr = sitk_array(image)
            arrays.append(arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1))
            if not meta:
                affine = sitk_affine(image)
                meta = {
                    MetaKeys.ORIGINAL_AFFINE: affine,
                    MetaKeys.AFFINE: affine.copy(),
                    MetaKeys.SPACE: SpaceKeys.RAS,
                    MetaKeys.SPATIAL_SHAPE: np.asarray(image.GetSize()[:3]),
                    MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if arr.shape[0] == 1 else -1,
                    "spacing": np.asarray(image.GetSpacing()),
                }
        if len(arrays) > 1:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
            return np.stack(arrays), meta
        return arrays[0], meta


# ---------------------------------------------------------------------------------------------
# load_volume
# ---------------------------------------------------------------------------------------------


def _grey_levels(arr: np.ndarray) -> np.ndarray:
    """Native byte order (torch refuses big-endian arrays), and float16 as float32 (CPU ops want single precision)."""
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _with_time_axis(meta: dict[str, Any], time_axis: dict[str, Any] | None) -> dict[str, Any]:
    """``meta`` plus ``"time_axis"`` when the NIfTI header marked the 4th dimension as time."""
    return {**meta, "time_axis": time_axis} if time_axis else meta


def _read_nifti(path: Path, facts: FileFacts) -> Volume:
    img, layout, time_axis = open_nifti(path, facts)
    try:
        arr = np.asarray(img.dataobj)
    except MemoryError:
        raise out_of_memory(path, img.shape) from None
    except Exception as exc:  # truncated gzip, ...
        raise DataError(path, f"cannot read NIfTI (corrupt or truncated file? {short_error(exc)})") from None
    if layout == "volume":
        arr = arr[None]
    elif layout == "channels":
        arr = np.moveaxis(arr, -1, 0)
    else:  # (X, Y, Z, 1, C) vector images
        arr = np.moveaxis(arr[:, :, :, 0], -1, 0)
    meta = _with_time_axis({"reader": "nibabel"}, time_axis)
    return Volume(_grey_levels(arr), np.asarray(img.affine, dtype=np.float64), str(path), meta)


def _read_sitk(path: Path, series_uid: str | None, facts: FileFacts | None) -> Volume:
    reader, time_axis = SimpleITKReader(series_uid), None
    if facts is not None and facts.ending in NIFTI_ENDINGS:
        time_axis = open_nifti(path, facts).time_axis  # the NIfTI header checks, as SimpleITKReader.read does
        image = reader._read_file(path, facts)
    else:
        image = reader._read_one(path, facts)
    try:
        arr = sitk_array(image)
    except MemoryError:
        raise out_of_memory(path, image.GetSize()) from None
    return Volume(_grey_levels(arr), sitk_affine(image), str(path), _with_time_axis({"reader": "sitk"}, time_axis))


def _read_pydicom(path: Path, series_uid: str | None) -> Volume:
    from monai.data import PydicomReader

    series = inspect_for_reading(path, series_uid)
    check_pydicom_decoders(path, series)
    regex = "^(" + "|".join(re.escape(str(f)) for f in series.files) + ")$"
    reader = PydicomReader(fname_regex=regex)
    try:
        arr, meta = reader.get_data(reader.read(str(path)))
    except Exception as exc:  # MemoryError included
        raise series_error(path, series, exc, "cannot read DICOM series") from None
    return Volume(np.asarray(arr)[None], np.asarray(meta["affine"], dtype=np.float64), str(path), {"reader": "pydicom"})


def load_volume(path: str | os.PathLike, series_uid: str | None = None, reader: str = "auto") -> Volume:
    """Load a volume from a NIfTI / NRRD / MHA file or a DICOM series folder.

    Every file is sniffed first (:func:`medswin.data.sniff.sniff`) and its header checked before any
    voxel is allocated (see the module docstring).

    Args:
        path: a file, or a DICOM series folder.
        series_uid: the series to read when a folder holds several.
        reader: ``"auto"`` (nibabel for NIfTI, SimpleITK otherwise), ``"nibabel"``, ``"sitk"`` or
            ``"pydicom"`` (DICOM folders, through MONAI's ``PydicomReader``).

    Raises:
        DataError: naming the file for anything missing, unreadable, unsupported or inconsistent.
        ValueError: for an unknown ``reader``.
    """
    if reader not in ("auto", "nibabel", "sitk", "pydicom"):
        raise ValueError(f"unknown reader {reader!r}; use auto, nibabel, sitk or pydicom")
    path = Path(path)
    if is_series_folder(path):
        if reader == "nibabel":
            raise DataError(path, "nibabel reads NIfTI files (.nii, .nii.gz) only")
        return _read_pydicom(path, series_uid) if reader == "pydicom" else _read_sitk(path, series_uid, None)
    facts = sniff(path)
    if reader == "pydicom":
        raise DataError(path, "the pydicom reader expects a DICOM series folder")
    is_nifti = facts.ending in NIFTI_ENDINGS
    if reader == "nibabel" and not is_nifti:
        raise DataError(path, "nibabel reads NIfTI files (.nii, .nii.gz) only")
    if reader == "nibabel" or (reader == "auto" and is_nifti):
        return _read_nifti(path, facts)
    return _read_sitk(path, series_uid, facts)


def load_channels(paths: Sequence[str | os.PathLike], series_uid: str | None = None) -> Volume:
    """Load one file per channel and stack them into one ``(C, X, Y, Z)`` volume.

    Args:
        paths: the channel files (or DICOM series folders), in channel order, each read with :func:`load_volume`.
        series_uid: the series to read from folders holding several.

    Raises:
        DataError: for a file that cannot be read, or one on a different grid (shape or affine)
            than the first, naming both files.
    """
    if not paths:
        raise ValueError("load_channels needs at least one file")
    volumes = [load_volume(p, series_uid) for p in paths]
    first = volumes[0]
    for other in volumes[1:]:
        if other.spatial_shape != first.spatial_shape:
            raise DataError(
                other.path,
                f"channel file is on a different grid than {first.path} "
                f"(shape {other.spatial_shape} vs {first.spatial_shape})",
            )
        offset = float(np.max(np.abs(other.affine - first.affine)))
        if offset > 1e-3:
            raise DataError(
                other.path, f"channel file is on a different grid than {first.path} (affine differs by {offset:.4g} mm)"
            )
    if len(volumes) == 1:
        return first
    meta = {**first.meta, "channel_paths": [v.path for v in volumes]}
    return Volume(np.concatenate([v.array for v in volumes]), first.affine, first.path, meta)


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def check_image(
    volume: Volume,
    expected_channels: int | None = None,
    channel_names: Sequence[str] = (),
    allow_all_zero: bool = False,
) -> None:
    """Raise :class:`DataError` for an empty image, NaN/inf voxels or a wrong channel count.

    A wrong channel count on a 4D NIfTI whose header marks a time axis (``volume.meta["time_axis"]``)
    says so, and how to pick one volume.

    Args:
        volume: the loaded image.
        expected_channels: the channel count it must have (``None``: any).
        channel_names: names of the expected channels, for the message.
        allow_all_zero: accept an image whose every voxel is 0 (e.g. a blank mask or a padding volume).
    """
    if volume.array.size == 0:
        raise DataError(volume.path, "image is empty (zero voxels)")
    if expected_channels is not None and volume.channels != expected_channels:
        names = f" ({', '.join(channel_names)})" if channel_names else ""
        message = f"image has {volume.channels} channel(s), expected {expected_channels}{names}"
        time_axis = volume.meta.get("time_axis")
        if time_axis:
            message += (
                f"; the 4th dimension is a time axis ({time_axis['volumes']} volumes, step {time_axis['step']}): "
                "pick one volume first, e.g. nibabel img.slicer[..., k]"
            )
        raise DataError(volume.path, message)
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(volume.array)))
        if bad:
            raise DataError(volume.path, f"image contains {bad} NaN/inf voxel(s)")
    if not allow_all_zero and not np.any(volume.array):
        raise DataError(volume.path, "image is empty (every voxel is 0)")


def check_label(label: Volume, allowed_values: Sequence[int], dataset: str = "") -> None:
    """Raise :class:`DataError` unless ``label`` is one channel of integers within ``allowed_values``."""
    if label.channels != 1:
        raise DataError(label.path, f"label has {label.channels} channels, expected 1")
    arr = label.array
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise DataError(label.path, "label contains NaN/inf")
        if not np.all(arr == np.round(arr)):
            raise DataError(label.path, "label contains non-integer values (is it an image or a probability map?)")
    values = set(np.unique(arr).astype(np.int64).tolist())
    extra = sorted(values - {int(v) for v in allowed_values})
    if extra:
        where = f"dataset {dataset!r}" if dataset else "the allowed"
        raise DataError(label.path, f"label values {extra} are not in {where} labels {sorted(allowed_values)}")


def check_pair(image: Volume, label: Volume, atol_mm: float = 1e-3) -> None:
    """Raise :class:`DataError` when image and label disagree in shape or in their affine (world grid)."""
    if image.spatial_shape != label.spatial_shape:
        raise DataError(
            label.path,
            f"label shape {label.spatial_shape} does not match image shape {image.spatial_shape} ({image.path})",
        )
    diff = float(np.max(np.abs(image.affine - label.affine)))
    if diff > atol_mm:
        raise DataError(label.path, f"label affine differs from the image's ({image.path}) by up to {diff:.4g} mm")


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------


def _orthogonal_columns(matrix: np.ndarray) -> bool:
    """True when the 3x3 ``matrix`` has finite, non-zero columns at right angles (|cosine| within
    :data:`ORTHOGONAL_TOLERANCE`): the only matrices a NIfTI qform (a rotation and spacings) can hold."""
    norms = np.linalg.norm(matrix, axis=0)
    if not np.all(np.isfinite(matrix)) or not np.all(norms > 0):
        return False
    unit = matrix / norms
    return float(np.max(np.abs(unit.T @ unit - np.eye(3)))) <= ORTHOGONAL_TOLERANCE


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``array`` (``(X, Y, Z)`` or ``(X, Y, Z, C)``) with ``affine`` to ``path`` atomically.

    Integer label maps are stored as uint8 (or int16 beyond 255 labels).  The affine is stored as
    the sform (code 1), and as the qform (code 1) too when its columns are orthogonal; a sheared
    affine, which a qform cannot hold, gets qform code 0 (else nibabel would store an approximate
    qform that :func:`load_volume` rejects as disagreeing with the sform).

    Args:
        array: the voxels.
        affine: the 4x4 voxel-to-RAS affine (mm).
        path: the output file, ending in ``.nii`` or ``.nii.gz``; its folder is created when missing.

    Returns:
        the path written.
    """
    path = Path(path)
    if not str(path).endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: NIfTI outputs must end in .nii or .nii.gz")
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        array = array.astype(np.uint8 if array.min() >= 0 and array.max() <= 255 else np.int16)
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(np.asarray(array), affine)
    if _orthogonal_columns(affine[:3, :3]):
        img.set_qform(affine, code=1)
    else:
        img.set_qform(None, code=0)
    img.set_sform(affine, code=1)
    return atomic_write(path, lambda tmp: nib.save(img, tmp))


def write_like(array: np.ndarray, reference: Volume, path: str | os.PathLike) -> Path:
    """Write ``array`` (``(X, Y, Z)`` or ``(C, X, Y, Z)``) on ``reference``'s grid (its affine) atomically."""
    spatial = array.shape[-3:]
    if tuple(spatial) != reference.spatial_shape:
        raise ValueError(
            f"array shape {array.shape} does not match the reference grid {reference.spatial_shape} ({reference.path})"
        )
    out = array if array.ndim == 3 else np.moveaxis(array, 0, -1)
    return write_nifti(out, reference.affine, path)
