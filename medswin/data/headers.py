"""Header checks done before any voxel is allocated, with errors that name the file and the problem.

NIfTI headers (:func:`open_nifti`) and the headers SimpleITK reads for NRRD / MetaImage files
(:func:`check_sitk_header`) are checked for: 3D (or channels) dimensions, a supported data type, a
sane geometry (spacing, affine, qform/sform), a size within :func:`max_voxels` and the machine's
memory, and for uncompressed data a file long enough to hold the voxels it declares.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np

from .errors import DataError
from .formats import SITK_VOLUME_ENDINGS
from .sniff import FileFacts

SINGULAR_TOLERANCE = 1e-6  # |det| of the affine's 3x3 below this fraction of the spacing product: singular

MAX_VOXELS = 2**31
"""Largest number of voxels (all channels) a header may declare; the environment variable
``MEDSWIN_MAX_VOXELS`` overrides it (see :func:`max_voxels`)."""


# ---------------------------------------------------------------------------------------------
# limits and messages shared by every format (nothing here touches the voxels)
# ---------------------------------------------------------------------------------------------


def max_voxels() -> int:
    """The largest voxel count a header may declare: ``MEDSWIN_MAX_VOXELS`` when set, else :data:`MAX_VOXELS`."""
    value = os.environ.get("MEDSWIN_MAX_VOXELS", "").strip()
    if not value:
        return MAX_VOXELS
    try:
        limit = int(value)
    except ValueError:
        try:
            limit = int(float(value))
        except (ValueError, OverflowError):
            limit = 0
    if limit <= 0:
        raise ValueError(f"MEDSWIN_MAX_VOXELS must be a positive number of voxels, got {value!r}")
    return limit


_ITK_PREFIX = re.compile(
    r"Exception thrown in SimpleITK \S+: \S+:\d+:\s*((itk::)?ERROR: \w+\(0x[0-9a-fA-F]+\):\s*)?"
)  # "Exception thrown in SimpleITK ImageFileReader_Execute: /build/...cxx:935:\nitk::ERROR: ImageIO(0x..): "


def short_error(exc: BaseException) -> str:
    """One line for a library's exception: its type and message, without ITK's source-file prefix, at most
    200 characters (for the ``DataError`` messages of every reader)."""
    lines = [line.strip() for line in _ITK_PREFIX.sub("", str(exc)).splitlines() if line.strip()]
    if len(lines) > 2 and lines[-1].startswith("[nrrd]"):  # teem's chain of "trouble": first and last say it
        lines = [lines[0], lines[-1]]
    text = " ".join(" ".join(lines).split())
    return f"{type(exc).__name__}: {text[:200]}"


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in shape)


def _sci(n: float) -> str:
    """``2.7e13`` for 27000000000000."""
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{n:.2g}")


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), else the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _physical_memory()


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def out_of_memory(path: str | os.PathLike, shape: Sequence[int] | None) -> DataError:
    """The :class:`DataError` for a ``MemoryError`` while reading ``path`` (``shape``: its voxels, when known)."""
    what = f"its {_dims(shape)} voxels" if shape else "its voxels"
    return DataError(path, f"not enough memory to read {what}: free memory or crop/downsample the file first")


def check_size(path: str | os.PathLike, shape: Sequence[int], itemsize: int) -> None:
    """Raise :class:`DataError` unless the declared voxel count is within :func:`max_voxels` and its bytes
    within the machine's memory.

    Args:
        path: the file or series folder (named in the message).
        shape: the declared shape (channels included).
        itemsize: bytes per voxel of the array the reader will return.
    """
    voxels = math.prod(int(n) for n in shape)
    limit = max_voxels()
    if voxels > limit:
        raise DataError(
            path,
            f"header declares {_dims(shape)} voxels ({_sci(voxels)}), "
            f"more than the limit of {limit} (MEDSWIN_MAX_VOXELS)",
        )
    memory = _physical_memory()
    nbytes = voxels * itemsize
    if memory and nbytes > memory:
        raise DataError(
            path,
            f"not enough memory to read {_dims(shape)} voxels ({nbytes / 2**30:.1f} GiB; "
            f"this machine has {memory / 2**30:.1f} GiB)",
        )


# peak bytes per voxel of the resampled volume in a prediction (sampling grid, resampled and normalised copies,
# window accumulator, inversion): measured 2.4 GB above the baseline for 47M voxels of one channel (~50 B/voxel)
RESAMPLING_BYTES_PER_VOXEL = 40
RESAMPLING_BYTES_PER_CHANNEL_VOXEL = 16


def check_resampled_size(
    path: str | os.PathLike,
    shape: Sequence[int],
    spacing: Sequence[float],
    target: Sequence[float],
    channels: int = 1,
) -> tuple[int, ...]:
    """The shape a volume takes when resampled to ``target`` mm; a :class:`DataError` (projected size, and how to
    proceed) when that exceeds :func:`max_voxels` or the machine's memory, before anything is resampled.

    Args:
        path: the file, named in the message.
        shape: spatial shape ``(X, Y, Z)`` before resampling.
        spacing: its voxel size in mm.
        target: the dataset's ``target_spacing`` in mm.
        channels: image channels (each is resampled).
    """
    new = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))
    voxels = math.prod(new) * channels
    limit = max_voxels()
    fix = "check the dataset's target_spacing"
    what = (
        f"resampling from {'x'.join(f'{s:g}' for s in spacing)} mm to {'x'.join(f'{t:g}' for t in target)} mm "
        f"would make a {_dims(new)} volume ({_sci(voxels)} voxels"
        + (f" in {channels} channels" if channels > 1 else "")
        + ")"
    )
    if voxels > limit:
        raise DataError(path, f"{what}, more than the limit of {limit}: {fix}, or raise the limit (MEDSWIN_MAX_VOXELS)")
    memory = _available_memory()
    nbytes = math.prod(new) * (RESAMPLING_BYTES_PER_VOXEL + RESAMPLING_BYTES_PER_CHANNEL_VOXEL * channels)
    if memory and nbytes > memory:
        raise DataError(
            path,
            f"{what}, needing about {nbytes / 2**30:.0f} GiB, more than the {memory / 2**30:.0f} GiB of memory "
            f"available: {fix} (or use a machine with more memory)",
        )
    return new


def _check_dims(path: str | os.PathLike, shape: tuple[int, ...]) -> str:
    """The layout of a header's shape: ``"volume"`` (3D), ``"channels"`` (4D) or ``"vector"`` (5D, dim 4 == 1)."""
    nd = len(shape)
    if nd < 3:
        raise DataError(path, f"{nd}D image of shape {shape}: medswin reads 3D volumes")
    vector = nd == 5 and shape[3] == 1
    if nd > 4 and not vector:
        raise DataError(path, f"{nd}D image of shape {shape}: medswin reads 3D volumes (channels in the 4th dimension)")
    if 0 in shape:
        raise DataError(path, f"header declares shape {shape}, which holds no voxels")
    return "vector" if vector else "volume" if nd == 3 else "channels"


def _check_spacing(path: str | os.PathLike, spacing: Sequence[float], source: str) -> None:
    values = tuple(round(float(s), 6) for s in spacing)
    problem = None
    if any(math.isnan(s) for s in values):
        problem = "a NaN"
    elif any(math.isinf(s) for s in values):
        problem = "an infinite value"
    elif any(s == 0 for s in values):
        problem = "a zero"
    elif any(s < 0 for s in values):
        problem = "a negative value"
    if problem:
        raise DataError(path, f"voxel spacing {values} mm has {problem}: the header's {source} is broken")


def _check_matrix(path: str | os.PathLike, matrix: np.ndarray, origin: np.ndarray, source: str) -> None:
    """A finite, non-singular 3x3 voxel-to-world matrix with positive column norms (the spacing)."""
    if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(origin))):
        raise DataError(path, f"non-finite affine (NaN or inf): the header's {source} is broken")
    spacing = np.linalg.norm(matrix, axis=0)
    _check_spacing(path, spacing, source)
    det = float(np.linalg.det(matrix))
    if abs(det) <= SINGULAR_TOLERANCE * float(np.prod(spacing)):
        raise DataError(
            path,
            f"singular affine (determinant {round(det, 6) + 0.0:g}): its voxel axes are (nearly) parallel, "
            f"the header's {source} is broken",
        )


def _short_file(path: str | os.PathLike, needed: int, available: int, where: str) -> DataError:
    return DataError(
        path,
        f"header declares {needed} bytes of voxel data but {where} holds only {max(available, 0)} "
        "(truncated, or wrong dimensions)",
    )


# ---------------------------------------------------------------------------------------------
# NIfTI headers
# ---------------------------------------------------------------------------------------------

_TIME_UNITS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def _raw_nifti_header(facts: FileFacts) -> Any:
    """The header exactly as stored (nibabel's loader silently 'fixes' zero or negative pixdims)."""
    if len(facts.header) not in (348, 540):
        return None
    # the byte order is the one in which sizeof_hdr reads 348/540 (nibabel guesses from dim[0] instead)
    order = "<" if struct.unpack("<i", facts.header[:4])[0] == len(facts.header) else ">"
    header_class = nib.Nifti2Header if len(facts.header) == 540 else nib.Nifti1Header
    return header_class(binaryblock=facts.header, endianness=order, check=False)


def _time_axis(header: Any, shape: tuple[int, ...]) -> dict[str, Any] | None:
    """``{"volumes": 3, "step": "2.5 s"}`` when the header marks a 4th axis of several volumes as time, else ``None``."""
    if len(shape) != 4 or shape[3] <= 1:
        return None
    try:
        unit = header.get_xyzt_units()[1]
    except Exception:  # an unknown unit code
        return None
    step = float(header["pixdim"][4])
    if unit == "unknown" or not step > 0:
        return None
    text = f"{step * _TIME_UNITS[unit]:g} s" if unit in _TIME_UNITS else f"{step:g} {unit}"
    return {"volumes": int(shape[3]), "step": text}


def _nifti_dtype(path: Path, header: Any) -> np.dtype:
    code = int(header["datatype"])
    try:
        dtype = np.dtype(header.get_data_dtype())
    except Exception:
        raise DataError(path, f"unknown NIfTI data type code {code} (corrupt header?)") from None
    if dtype.names:
        kind = "rgba32" if len(dtype.names) == 4 else "rgb24"
        raise DataError(path, f"RGB colour data ({kind}): medswin reads grey-level intensities")
    if dtype.kind == "c":
        raise DataError(path, f"complex-valued data ({dtype.name}): take the magnitude (abs) first")
    if dtype.kind not in "biuf":
        try:
            label = header.get_value_label("datatype")
        except Exception:
            label = "?"
        raise DataError(path, f"unsupported NIfTI data type {label} (code {code})")
    return dtype


def _nifti_output_itemsize(header: Any, dtype: np.dtype) -> int:
    """Bytes per voxel of the array nibabel returns (scaled data becomes floating point)."""
    slope, inter = header.get_slope_inter()
    if slope is None or (slope == 1 and (inter or 0) == 0):
        return dtype.itemsize
    return np.result_type(dtype, np.float32).itemsize


def _inflated_size(path: Path, target: int, chunk: int = 1 << 20) -> int:
    """Bytes a gzip file inflates to (all members), counting no further than ``target``; memory stays bounded."""
    total = 0
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        data = f.read(chunk)
        while data and total < target:
            try:
                total += len(inflater.decompress(data, chunk))
            except zlib.error:
                break
            if inflater.unconsumed_tail:
                data = inflater.unconsumed_tail
            elif inflater.eof:  # another gzip member may follow
                data = inflater.unused_data or f.read(chunk)
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                data = f.read(chunk)
    return total


def _check_nifti_length(path: Path, header: Any, shape: tuple[int, ...], dtype: np.dtype, facts: FileFacts) -> None:
    """The file (or its inflated stream) is long enough for the voxels the header declares."""
    raw_offset = float(header["vox_offset"])
    if not math.isfinite(raw_offset) or raw_offset < 0:
        raise DataError(path, f"corrupt NIfTI header (vox_offset {raw_offset} is not a byte position)")
    offset = max(int(header.get_data_offset()), len(facts.header))
    needed = math.prod(shape) * dtype.itemsize
    if facts.ending == ".nii":
        if offset + needed > facts.size:
            raise _short_file(path, needed, facts.size - offset, "the file")
        return
    # .nii.gz: the ISIZE trailer is the inflated size mod 2**32 (of the last member: confirm before blaming)
    if facts.gzip_isize is None or offset + needed >= 2**32 or facts.gzip_isize >= offset + needed:
        return
    inflated = _inflated_size(path, offset + needed)
    if inflated < offset + needed:
        raise _short_file(path, needed, inflated - offset, "the file once uncompressed")


def _check_nifti_header(path: Path, header: Any, facts: FileFacts) -> tuple[tuple[int, ...], str]:
    """Shape, layout, data type, spacing, size and length checks on a NIfTI header; returns shape and layout."""
    ndim = int(header["dim"][0])
    if not 1 <= ndim <= 7:
        raise DataError(path, f"corrupt NIfTI header (dim[0] is {ndim}, expected 1 to 7)")
    shape = tuple(int(n) for n in header["dim"][1 : ndim + 1])
    if any(n < 0 for n in shape):
        raise DataError(path, f"corrupt NIfTI header (negative size in shape {shape})")
    layout = _check_dims(path, shape)
    dtype = _nifti_dtype(path, header)
    if int(header["sform_code"]) > 0:
        sform = header.get_sform()
        if not np.all(np.isfinite(sform)):
            raise DataError(path, "non-finite affine (NaN or inf): the header's sform is broken")
        _check_spacing(path, np.linalg.norm(sform[:3, :3], axis=0), "pixdim/affine")
    else:  # the affine comes from pixdim (qform or scaling only)
        _check_spacing(path, header["pixdim"][1:4], "pixdim/affine")
    check_size(path, shape, _nifti_output_itemsize(header, dtype))
    _check_nifti_length(path, header, shape, dtype, facts)
    return shape, layout


def _check_qform_sform(path: Path, header: Any, shape: tuple[int, ...]) -> None:
    """Both set (codes > 0) must place the volume's corners within one voxel of each other."""
    if int(header["qform_code"]) <= 0 or int(header["sform_code"]) <= 0:
        return
    try:
        qform, sform = header.get_qform(), header.get_sform()
    except Exception as exc:
        raise DataError(path, f"qform and sform cannot both be read ({short_error(exc)}): fix the header") from None
    corners = np.array([[a * (n - 1) for a, n in zip(c, shape[:3])] + [1.0] for c in np.ndindex(2, 2, 2)]).T
    distance = float(np.max(np.linalg.norm((qform @ corners - sform @ corners)[:3], axis=0)))
    voxel = float(np.max(np.linalg.norm(sform[:3, :3], axis=0)))
    if not np.isfinite(distance):
        raise DataError(path, "qform and sform disagree (the qform is not finite): fix the header")
    if distance > voxel:
        raise DataError(
            path,
            f"qform and sform disagree by {distance:.3g} mm (more than a voxel): fix the header "
            "(nibabel uses the sform, some tools the qform)",
        )


class OpenedNifti(NamedTuple):
    """A NIfTI file after its header checks: the lazily loaded nibabel ``image`` (no voxel read yet), its
    ``layout`` (``"volume"``, ``"channels"`` or ``"vector"``) and its ``time_axis`` (``None``, or
    ``{"volumes": N, "step": "2.5 s"}`` when the header marks the 4th dimension as time)."""

    image: Any
    layout: str
    time_axis: dict[str, Any] | None


def open_nifti(path: Path, facts: FileFacts) -> OpenedNifti:
    """Check a NIfTI file's header and open it lazily; no voxel is read.

    A 4D image whose header marks a time axis is accepted (read as channels); the time axis is
    returned for the caller to record.

    Args:
        path: the file.
        facts: what :func:`medswin.data.sniff.sniff` learnt about it (the raw header bytes, sizes).

    Raises:
        DataError: for dimensions, data type, geometry, size or file length the header gets wrong.
    """
    max_voxels()  # a bad MEDSWIN_MAX_VOXELS is the environment's error, not this file's
    try:
        raw = _raw_nifti_header(facts)
        checked = _check_nifti_header(path, raw, facts) if raw is not None else None
        try:
            img = nib.load(str(path))
        except MemoryError:
            raise out_of_memory(path, checked[0] if checked else None) from None
        except Exception as exc:  # truncated gzip, bad header, ...
            raise DataError(path, f"cannot read NIfTI (corrupt or truncated file? {short_error(exc)})") from None
        shape, layout = checked if checked else _check_nifti_header(path, img.header, facts)
        affine = np.asarray(img.affine, dtype=np.float64)
        _check_matrix(path, affine[:3, :3], affine[:3, 3], "qform/sform")
        _check_qform_sform(path, img.header, shape)
        return OpenedNifti(img, layout, _time_axis(raw if raw is not None else img.header, shape))
    except DataError:
        raise
    except Exception as exc:  # a header field nibabel cannot even interpret (an infinite vox_offset or scale)
        raise DataError(path, f"corrupt NIfTI header ({short_error(exc)})") from None


# ---------------------------------------------------------------------------------------------
# SimpleITK headers (ImageFileReader.ReadImageInformation, before Execute)
# ---------------------------------------------------------------------------------------------


def _sitk_bytes_per_voxel(info: Any) -> int:
    import SimpleITK as sitk

    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(info.GetPixelID()))
    per_component = int(bits.group(1)) // 8 if bits else 8
    return per_component * max(int(info.GetNumberOfComponents()), 1)


def _header_fields(head: bytes, separator: str) -> tuple[dict[str, str], int | None]:
    """``key<separator>value`` fields of a text header and where the header ends (``None``: not within ``head``).

    MetaImage (``=``) ends after its ``ElementDataFile`` line, NRRD (``:``) at its first blank line.
    """
    fields: dict[str, str] = {}
    position = 0
    for line in head.splitlines(keepends=True):
        end = position + len(line)
        if not line.endswith(b"\n"):
            return fields, None
        text = line.decode("latin-1").strip()
        position = end
        if separator == ":" and not text:
            return fields, end
        key, sep, value = text.partition(separator)
        if sep and not text.startswith("#"):
            fields[key.strip().lower()] = value.strip()
        if separator == "=" and key.strip().lower() == "elementdatafile":
            return fields, end
    return fields, None


METAIMAGE_TYPES = {
    f"MET_{t}" for t in ("CHAR", "UCHAR", "SHORT", "USHORT", "INT", "UINT", "LONG", "ULONG", "FLOAT", "DOUBLE")
} | {"MET_LONG_LONG", "MET_ULONG_LONG"}
MAX_TEXT_HEADER_DIMS = 16


def _ints(value: str) -> list[int] | None:
    try:
        return [int(v) for v in value.split()]
    except ValueError:
        return None


def precheck_text_header(path: Path, facts: FileFacts) -> None:
    """Check the fields of a MetaImage or NRRD text header that ITK trusts blindly (a negative or huge NDims makes
    SimpleITK crash the process), before SimpleITK parses it: dimension count, sizes, channels, data type.

    Args:
        path: the ``.mha`` / ``.mhd`` / ``.nrrd`` / ``.nhdr`` file.
        facts: what :func:`medswin.data.sniff.sniff` read of it (the first bytes hold the header).
    """
    is_nrrd = facts.head.startswith(b"NRRD")
    fields, _ = _header_fields(facts.head, ":" if is_nrrd else "=")
    dims_key, sizes_key = ("dimension", "sizes") if is_nrrd else ("ndims", "dimsize")
    if dims_key in fields:
        dims = _ints(fields[dims_key])
        if dims is None or len(dims) != 1 or not 1 <= dims[0] <= MAX_TEXT_HEADER_DIMS:
            raise DataError(path, f"corrupt header: {dims_key} {fields[dims_key]!r} is not a number of dimensions")
        if sizes_key in fields:
            sizes = _ints(fields[sizes_key])
            if sizes is None or len(sizes) != dims[0] or min(sizes) < 1:
                raise DataError(
                    path, f"corrupt header: {sizes_key} {fields[sizes_key]!r} is not {dims[0]} positive sizes"
                )
            check_size(path, sizes, 1)
    if not is_nrrd:
        channels = fields.get("elementnumberofchannels")
        if channels is not None and ((_ints(channels) or [0])[0] < 1 or len(_ints(channels) or []) != 1):
            raise DataError(path, f"corrupt header: ElementNumberOfChannels {channels!r}")
        kind = fields.get("elementtype")
        if kind is not None and kind.upper() not in METAIMAGE_TYPES:
            raise DataError(
                path, f"unsupported MetaImage ElementType {kind!r} (medswin reads {', '.join(sorted(METAIMAGE_TYPES))})"
            )


def _embedded_data(path: Path, facts: FileFacts) -> tuple[int, str] | None:
    """Bytes available for raw uncompressed voxel data of a MetaImage/NRRD file, and where they are.

    ``None`` when the data is compressed, split or offset in ways the header states (then ITK checks).
    """
    is_nrrd = facts.head.startswith(b"NRRD")
    fields, end = _header_fields(facts.head, ":" if is_nrrd else "=")
    if is_nrrd:
        if fields.get("encoding", "raw") != "raw" or "byte skip" in fields or "line skip" in fields:
            return None
        data_file = fields.get("data file", fields.get("datafile"))
    else:
        if fields.get("compresseddata", "false").lower() == "true" or fields.get("headersize", "0") not in ("", "0"):
            return None
        data_file = fields.get("elementdatafile")
    if data_file is None or data_file.upper() == "LOCAL":
        return (facts.size - end, "the file") if end is not None else None
    if data_file.upper().startswith("LIST") or "%" in data_file or " " in data_file:
        return None
    target = path.parent / data_file
    if not target.is_file():
        raise DataError(path, f"its voxel data file {data_file!r} is missing")
    return target.stat().st_size, f"its data file {data_file!r}"


def check_sitk_header(path: Path, info: Any, facts: FileFacts | None) -> None:
    """Check dimensions, pixel type, geometry, size and file length of a file SimpleITK has read the header of.

    Args:
        path: the file.
        info: a ``SimpleITK.ImageFileReader`` after ``ReadImageInformation()``.
        facts: what :func:`medswin.data.sniff.sniff` learnt about the file (``None``: skip the length check).

    Raises:
        DataError: naming the file and the problem.
    """
    import SimpleITK as sitk

    complex_types = {sitk.sitkComplexFloat32: "complex64", sitk.sitkComplexFloat64: "complex128"}
    if info.GetPixelID() in complex_types:
        raise DataError(
            path, f"complex-valued data ({complex_types[info.GetPixelID()]}): take the magnitude (abs) first"
        )
    size = tuple(int(n) for n in info.GetSize())
    components = int(info.GetNumberOfComponents())
    if components > 1 and len(size) > 3:
        shape = size + (components,)
        raise DataError(
            path, f"{len(shape)}D image of shape {shape}: medswin reads 3D volumes (channels in the 4th dimension)"
        )
    _check_dims(path, size)
    nd = len(size)
    direction = np.asarray(info.GetDirection(), dtype=np.float64).reshape(nd, nd)[:3, :3]
    spacing = np.asarray(info.GetSpacing(), dtype=np.float64)[:3]
    _check_spacing(path, spacing, "spacing")
    _check_matrix(path, direction @ np.diag(spacing), np.asarray(info.GetOrigin())[:3], "spacing/direction")
    check_size(path, size + ((components,) if components > 1 else ()), _sitk_bytes_per_voxel(info) // components)
    if facts is not None and facts.ending in SITK_VOLUME_ENDINGS:
        available = _embedded_data(path, facts)
        needed = math.prod(size) * _sitk_bytes_per_voxel(info)
        if available is not None and available[0] < needed:
            raise _short_file(path, needed, available[0], available[1])
