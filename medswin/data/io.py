"""Reading and writing volumes, with checks whose errors name the file and the problem.

Conventions (MONAI's): arrays are channel-first ``(C, X, Y, Z)``, indexed ``[c, i, j, k]``; the
affine maps voxel indices ``(i, j, k)`` to RAS world millimetres.  Every reader returns the same
world coordinates for the same voxel, whatever order it stores slices in.

Readers:

* NIfTI (``.nii``, ``.nii.gz``): nibabel;
* NRRD / MetaImage / NIfTI / DICOM series: :class:`SimpleITKReader`, a MONAI ``ImageReader``, so
  ``LoadImaged(keys, reader=SimpleITKReader())`` works in any MONAI pipeline;
* DICOM series also through MONAI's ``PydicomReader`` (``load_volume(folder, reader="pydicom")``).

A DICOM folder is inspected header by header first (:func:`inspect_dicom_series`): several series
(pick one with ``series_uid``), missing or duplicate slices, uneven spacing, mixed orientations and
slices without pixel data are reported before any pixel is read.

Writers are atomic: a temp file in the target folder, then a rename, so an interrupted run never
leaves a truncated output and never half-overwrites a user's file.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import ImageReader

from .errors import DataError

log = logging.getLogger(__name__)

NIFTI_ENDINGS = (".nii.gz", ".nii")
SITK_ENDINGS = (".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz", ".dcm")
SLICE_GAP_FACTOR = 1.5  # a gap this many times the usual spacing means missing slices
SPACING_ERROR_TOLERANCE = 0.1  # relative deviation of one slice step above which the series is rejected
SPACING_WARNING_TOLERANCE = 1e-3  # ... and above which it is accepted with a warning


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
    """``(C, X, Y, Z)`` array of a SimpleITK image (SimpleITK gives ``(Z, Y, X[, C])``)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        return np.moveaxis(arr, -1, 0).transpose(0, *range(arr.ndim - 1, 0, -1))
    return arr.T[None]


# ---------------------------------------------------------------------------------------------
# DICOM series inspection
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DicomSeries:
    """A checked DICOM series: its files sorted by position along the slice normal (ascending)."""

    uid: str
    description: str
    files: tuple[Path, ...]
    positions: tuple[float, ...]
    spacing: float | None


def _read_header(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, defer_size="64 KB")
    except InvalidDicomError:
        return None
    except Exception as exc:  # truncated / corrupt files
        raise DataError(path, f"unreadable DICOM file ({type(exc).__name__}: {exc})") from None


def _pixel_bytes_expected(ds: Any) -> int:
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    return int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1)) * frames * int(ds.BitsAllocated) // 8


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

    Checks: one series (or ``series_uid`` chosen), pixel data present and complete, one orientation,
    positions present, no duplicate positions, no missing slices (gaps > 1.5x the usual step),
    even spacing (deviation > 10% is an error, > 0.1% a warning).
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

    orientations = []
    for path, ds in items:
        if "PixelData" not in ds:
            raise DataError(path, "DICOM file has no pixel data")
        expected = _pixel_bytes_expected(ds)
        stored = ds["PixelData"].length if hasattr(ds["PixelData"], "length") else len(ds.PixelData)
        transfer = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
        compressed = transfer not in ("", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
        if not compressed and stored not in (0xFFFFFFFF,) and stored < expected:
            raise DataError(path, f"pixel data truncated ({stored} of {expected} bytes)")
        if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
            raise DataError(path, "missing ImageOrientationPatient/ImagePositionPatient: cannot place the slice")
        orientations.append(np.asarray(ds.ImageOrientationPatient, dtype=np.float64))
    ref = orientations[0]
    for (path, _), ori in zip(items, orientations):
        if not np.allclose(ori, ref, atol=1e-4):
            raise DataError(
                folder,
                f"inconsistent slice orientation: {items[0][0].name} has {ref.round(4).tolist()}, "
                f"{path.name} has {ori.round(4).tolist()}",
            )
    normal = np.cross(ref[:3], ref[3:])
    pos = np.array([float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=np.float64))) for _, ds in items])
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
    return DicomSeries(uid, description, tuple(files), tuple(float(p) for p in pos), spacing)


# ---------------------------------------------------------------------------------------------
# MONAI ImageReader backed by SimpleITK
# ---------------------------------------------------------------------------------------------


class SimpleITKReader(ImageReader):
    """MONAI ``ImageReader`` using SimpleITK: NRRD, MetaImage, NIfTI, single DICOM files, DICOM series folders.

    ``LoadImaged(keys, reader=SimpleITKReader())`` gives channel-first-ready arrays in ``(X, Y, Z)``
    order with a RAS affine, like MONAI's ``ITKReader`` (no ``itk`` package needed).  A folder is
    read as a DICOM series after :func:`inspect_dicom_series` (``series_uid`` picks one of several).
    A list of files is stacked as channels.  Reading failures raise :class:`DataError`.
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

    def _read_one(self, path: Path) -> Any:
        import SimpleITK as sitk

        if not path.exists():
            raise DataError(path, "file not found")
        try:
            if path.is_dir():
                series = inspect_dicom_series(path, self.series_uid)
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames([str(f) for f in series.files])
                return reader.Execute()
            return sitk.ReadImage(str(path))
        except DataError:
            raise
        except Exception as exc:
            raise DataError(path, f"cannot read ({_short(exc)})") from None

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


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


# ---------------------------------------------------------------------------------------------
# load_volume
# ---------------------------------------------------------------------------------------------


def _read_nifti(path: Path) -> Volume:
    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)
    except Exception as exc:  # truncated gzip, bad header, ...
        raise DataError(path, f"cannot read NIfTI (corrupt or truncated file? {_short(exc)})") from None
    if arr.ndim == 3:
        arr = arr[None]
    elif arr.ndim == 4:
        arr = np.moveaxis(arr, -1, 0)
    elif arr.ndim == 5 and arr.shape[3] == 1:  # (X, Y, Z, 1, C) vector images
        arr = np.moveaxis(arr[:, :, :, 0], -1, 0)
    else:
        raise DataError(path, f"expected a 3D volume or 4D multi-channel volume, got shape {arr.shape}")
    return Volume(arr, np.asarray(img.affine, dtype=np.float64), str(path), {"reader": "nibabel"})


def _read_pydicom(path: Path, series_uid: str | None) -> Volume:
    from monai.data import PydicomReader

    series = inspect_dicom_series(path, series_uid)
    regex = "^(" + "|".join(re.escape(str(f)) for f in series.files) + ")$"
    reader = PydicomReader(fname_regex=regex)
    try:
        arr, meta = reader.get_data(reader.read(str(path)))
    except Exception as exc:
        raise DataError(path, f"cannot read DICOM series ({_short(exc)})") from None
    return Volume(np.asarray(arr)[None], np.asarray(meta["affine"], dtype=np.float64), str(path), {"reader": "pydicom"})


def load_volume(path: str | os.PathLike, series_uid: str | None = None, reader: str = "auto") -> Volume:
    """Load a volume from a NIfTI / NRRD / MHA file or a DICOM series folder.

    ``reader``: ``"auto"`` (nibabel for NIfTI, SimpleITK otherwise), ``"nibabel"``, ``"sitk"`` or
    ``"pydicom"`` (DICOM folders, through MONAI's ``PydicomReader``).  Raises :class:`DataError`
    naming the file for anything missing, unreadable or inconsistent.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    name = path.name.lower()
    if reader == "auto":
        reader = "nibabel" if name.endswith(NIFTI_ENDINGS) else "sitk"
    if reader == "nibabel":
        if not name.endswith(NIFTI_ENDINGS):
            raise DataError(path, "nibabel reads NIfTI files (.nii, .nii.gz) only")
        return _read_nifti(path)
    if reader == "pydicom":
        if not path.is_dir():
            raise DataError(path, "the pydicom reader expects a DICOM series folder")
        return _read_pydicom(path, series_uid)
    if reader != "sitk":
        raise ValueError(f"unknown reader {reader!r}; use auto, nibabel, sitk or pydicom")
    if not path.is_dir() and not name.endswith(SITK_ENDINGS):
        raise DataError(
            path, f"unsupported file type (supported: {', '.join(NIFTI_ENDINGS + SITK_ENDINGS)}, DICOM folders)"
        )
    sitk_reader = SimpleITKReader(series_uid)
    image = sitk_reader.read(path)
    return Volume(sitk_array(image), sitk_affine(image), str(path), {"reader": "sitk"})


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def check_image(volume: Volume, expected_channels: int | None = None, channel_names: Sequence[str] = ()) -> None:
    """Raise :class:`DataError` for an empty image, NaN/inf voxels or a wrong channel count."""
    if volume.array.size == 0:
        raise DataError(volume.path, "image is empty (zero voxels)")
    if expected_channels is not None and volume.channels != expected_channels:
        names = f" ({', '.join(channel_names)})" if channel_names else ""
        raise DataError(volume.path, f"image has {volume.channels} channel(s), expected {expected_channels}{names}")
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(volume.array)))
        if bad:
            raise DataError(volume.path, f"image contains {bad} NaN/inf voxel(s)")
    if not np.any(volume.array):
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
    extra = sorted(values - set(int(v) for v in allowed_values))
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


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``array`` (``(X, Y, Z)`` or ``(X, Y, Z, C)``) with ``affine`` to ``path`` atomically.

    Integer label maps are stored as uint8 (or int16 beyond 255 labels).  Returns the path.
    """
    path = Path(path)
    if not str(path).endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: NIfTI outputs must end in .nii or .nii.gz")
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        array = array.astype(np.uint8 if array.min() >= 0 and array.max() <= 255 else np.int16)
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if str(path).endswith(".nii.gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.chmod(tmp, _default_file_mode())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_like(array: np.ndarray, reference: Volume, path: str | os.PathLike) -> Path:
    """Write ``array`` (``(X, Y, Z)`` or ``(C, X, Y, Z)``) on ``reference``'s grid (its affine) atomically."""
    spatial = array.shape[-3:]
    if tuple(spatial) != reference.spatial_shape:
        raise ValueError(
            f"array shape {array.shape} does not match the reference grid {reference.spatial_shape} ({reference.path})"
        )
    out = array if array.ndim == 3 else np.moveaxis(array, 0, -1)
    return write_nifti(out, reference.affine, path)
