"""Byte-level identification of a file before any imaging library touches it.

:func:`sniff` looks at a path the way ``file(1)`` would: does it exist, is it a readable regular
file, is it empty, and do its first bytes match its ending (gzip magic for ``.nii.gz``, a NIfTI
header size for ``.nii``, ``NRRD000`` for NRRD, a MetaImage text header, ``DICM`` for DICOM)?
Every mismatch is one :class:`~medswin.data.errors.DataError` saying what the file is and what is
wrong (``"scan.nii.gz: not gzip-compressed (an uncompressed NIfTI?): rename it to .nii"``), so a
renamed, truncated or mistaken file never reaches nibabel or SimpleITK, whose errors are long and
rarely name the cause.

It reads at most :data:`HEAD_BYTES` bytes from the start of the file (for ``.nii.gz``: inflates
the NIfTI header from them) and, for gzip files, the 4-byte ISIZE trailer.  The endings come from
:mod:`medswin.data.formats`.  :func:`sniff_view` does the same for 2D X-ray views (NIfTI, PNG, JPEG).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .formats import NIFTI_ENDINGS, PICTURE_ENDINGS, READABLE_ENDINGS, volume_ending

HEAD_BYTES = 1024
"""How many bytes :func:`sniff` reads from the start of a file."""

GZIP_MAGIC = b"\x1f\x8b"
NIFTI_HEADER_SIZES = (348, 540)  # sizeof_hdr of NIfTI-1 and NIfTI-2
DICOM_PREAMBLE = 128
METAIMAGE_KEYS = (
    "ObjectType",
    "ObjectSubType",
    "NDims",
    "DimSize",
    "ElementType",
    "ElementSpacing",
    "ElementDataFile",
    "BinaryData",
    "CompressedData",
    "TransformMatrix",
    "Comment",
)
_METAIMAGE_LINE = re.compile(rb"^\s*(" + "|".join(METAIMAGE_KEYS).encode() + rb")\s*=", re.MULTILINE)
_DICOM_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
VIEW_ENDINGS = NIFTI_ENDINGS + PICTURE_ENDINGS
"""File endings of 2D X-ray views (:func:`sniff_view`)."""
_PICTURE_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n", "PNG"),
    ".jpg": (b"\xff\xd8\xff", "JPEG"),
    ".jpeg": (b"\xff\xd8\xff", "JPEG"),
}


@dataclass(frozen=True)
class FileFacts:
    """What :func:`sniff` (or :func:`sniff_view`) learnt about a file.

    ``ending`` is its ending from :mod:`medswin.data.formats` (``".nii.gz"``, ``".png"``), ``size`` its size on
    disk, ``head`` its first bytes; for NIfTI ``header`` holds the (inflated) header bytes, and for
    gzip files ``gzip_isize`` the trailer's uncompressed size modulo 2**32.
    """

    path: Path
    ending: str
    size: int
    head: bytes
    header: bytes = b""
    gzip_isize: int | None = None


def sniff(path: str | os.PathLike) -> FileFacts:
    """Check that ``path`` is a readable, non-empty file whose first bytes match its ending.

    Args:
        path: a file (DICOM series folders are not sniffed).

    Returns:
        the :class:`FileFacts` read on the way (size, first bytes, inflated NIfTI header, gzip trailer).

    Raises:
        DataError: one line naming the file and the problem (missing, folder, link loop, permission,
            empty, unsupported ending, content that does not match the ending).
    """
    path = Path(path)
    size, head, trailer = _read_start(path)
    ending = volume_ending(path.name)
    if ending is None:
        raise DataError(path, _unsupported(path, head))
    check = _CHECKS.get(ending)
    header = check(path, head) if check is not None else b""
    isize = int.from_bytes(trailer, "little") if trailer is not None else None
    return FileFacts(path, ending, size, head, header, isize)


def sniff_view(path: str | os.PathLike) -> FileFacts:
    """Check that ``path`` is a readable, non-empty 2D X-ray view file whose first bytes match its ending.

    NIfTI views (``.nii.gz``, ``.nii``) go through :func:`sniff`; pictures (``.png``, ``.jpg``,
    ``.jpeg``) must start with their format's signature.

    Args:
        path: the view file.

    Returns:
        the :class:`FileFacts` read on the way.

    Raises:
        DataError: one line naming the file and the problem (as :func:`sniff`, with the endings of
            :data:`VIEW_ENDINGS`).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_ENDINGS):
        return sniff(path)
    size, head, _ = _read_start(path)
    ending = next((e for e in PICTURE_ENDINGS if name.endswith(e)), None)
    if ending is None:
        raise DataError(path, _unsupported(path, head, f"X-ray views are {', '.join(VIEW_ENDINGS)}", _identify_view))
    magic, kind = _PICTURE_MAGIC[ending]
    if not head.startswith(magic):
        raise DataError(path, f"not a {kind} file ({_identify_view(head) or describe(head)})")
    return FileFacts(path, ending, size, head)


# ---------------------------------------------------------------------------------------------
# the file itself
# ---------------------------------------------------------------------------------------------


def _read_start(path: Path) -> tuple[int, bytes, bytes | None]:
    """Size, first bytes and gzip trailer of ``path`` after checking it is a readable, non-empty regular file."""
    size = _stat_regular_file(path)
    if not os.access(path, os.R_OK):
        raise DataError(path, "permission denied")
    head, trailer = _read_head(path, size)
    if size == 0:
        raise DataError(path, "empty file (0 bytes)")
    return size, head, trailer


def _stat_regular_file(path: Path) -> int:
    """Size of ``path`` after checking that it exists and is a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise DataError(path, f"file not found (broken symbolic link to {os.readlink(path)})") from None
        raise DataError(path, "file not found") from None
    except NotADirectoryError:
        raise DataError(path, "file not found (a part of its path is a file, not a folder)") from None
    except PermissionError:
        raise DataError(path, "permission denied (cannot look into its folder)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(path, "symbolic link loop") from None
        raise DataError(path, f"cannot access ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(path, "is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(path, f"not a regular file ({_file_kind(st.st_mode)})")
    return st.st_size


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device"}
    return next((name for test, name in kinds.items() if test(mode)), "a device or other special file")


def _read_head(path: Path, size: int) -> tuple[bytes, bytes | None]:
    """The first :data:`HEAD_BYTES` bytes and, for gzip endings, the last 4 (the ISIZE trailer)."""
    gzip_ending = path.name.lower().endswith(".gz")
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            trailer = None
            if gzip_ending and size >= 18:  # 10-byte gzip header + 8-byte trailer
                f.seek(size - 4)
                trailer = f.read(4)
    except PermissionError:
        raise DataError(path, "permission denied") from None
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror or exc})") from None
    return head, trailer


# ---------------------------------------------------------------------------------------------
# content: what do the first bytes look like?
# ---------------------------------------------------------------------------------------------


def nifti_header_size(data: bytes) -> int | None:
    """348 or 540 when ``data`` starts like a NIfTI-1/-2 header (sizeof_hdr, either byte order), else ``None``."""
    if len(data) < 4:
        return None
    for order in "<>":
        value = struct.unpack(order + "i", data[:4])[0]
        if value in NIFTI_HEADER_SIZES:
            return value
    return None


def _inflate_start(data: bytes, limit: int = 1024) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes inflated from the start of gzip ``data``, and whether the stream ended there."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, limit)
    return out, inflater.eof


def _text_start(data: bytes) -> str | None:
    """The first printable characters when ``data`` starts with text, else ``None``."""
    sample = data[:64]
    if not sample or any(b < 0x20 and b not in b"\t\n\r" or b == 0x7F for b in sample):
        return None
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:  # a character cut at the end of the sample is fine
            return None
        text = sample[: exc.start].decode("utf-8")
    words = " ".join(text.split())
    return words[:40] + ("..." if len(words) > 40 or len(data) > len(sample) else "")


def _looks_dicom(data: bytes) -> bool:
    """``DICM`` after the 128-byte preamble, or a preamble-less file starting with a group 0002/0008 tag."""
    if data[DICOM_PREAMBLE : DICOM_PREAMBLE + 4] == b"DICM":
        return True
    if len(data) < 8:
        return False
    for order in "<>":
        group, _element = struct.unpack(order + "HH", data[:4])
        if group not in (0x0002, 0x0008):
            continue
        if data[4:6] in _DICOM_VRS:  # explicit VR
            return True
        if order == "<" and struct.unpack("<I", data[4:8])[0] < 0x10000:  # implicit VR: a small value length
            return True
    return False


def _metaimage_ending(data: bytes) -> str:
    return ".mha" if re.search(rb"ElementDataFile\s*=\s*LOCAL", data) else ".mhd"


def identify(data: bytes) -> str | None:
    """What the first bytes of a file look like, as a hint for the user; ``None`` when not recognised."""
    if data[:2] == GZIP_MAGIC:
        try:
            inner, _ = _inflate_start(data, 540)
        except zlib.error:
            inner = b""
        if nifti_header_size(inner):
            return "its content looks like a gzip-compressed NIfTI: rename it to .nii.gz"
        return "its content is gzip-compressed: unpack it first"
    if nifti_header_size(data):
        return "its content looks like a NIfTI header: rename it to .nii"
    if data.startswith(b"NRRD000"):
        return "its content looks like a NRRD header: rename it to .nrrd"
    if _METAIMAGE_LINE.search(data[:HEAD_BYTES]):
        return f"its content looks like a MetaImage header: rename it to {_metaimage_ending(data)}"
    if _looks_dicom(data):
        return "its content looks like a DICOM file: rename it to .dcm, or pass the folder of its series"
    return None


def _identify_view(data: bytes) -> str | None:
    """A hint for a view file: what its first bytes look like when that is a picture or a NIfTI, else ``None``."""
    for ending, (magic, kind) in _PICTURE_MAGIC.items():
        if data.startswith(magic):
            return f"its content looks like a {kind} picture: rename it to {ending}"
    if data[:2] == GZIP_MAGIC or nifti_header_size(data):
        return identify(data)
    return None


def describe(data: bytes) -> str:
    """Unrecognised content in a few words: ``starts with text: '...'`` or ``unknown content, starts with 0x...``."""
    text = _text_start(data)
    if text is not None:
        return f"starts with text: '{text}'"
    return f"unknown content, starts with 0x{data[:8].hex()}"


def _not_a(kind: str, data: bytes) -> str:
    return f"not a {kind} file ({identify(data) or describe(data)})"


def _unsupported(
    path: Path,
    data: bytes,
    readable: str = f"medswin reads {', '.join(READABLE_ENDINGS)} and DICOM series folders",
    hint_for: Callable[[bytes], str | None] = identify,
) -> str:
    suffix = path.suffix.lower()
    what = f"'{suffix}' (" if suffix else "(no file ending; "
    hint = hint_for(data)
    return f"unsupported file type {what}{readable})" + (f"; {hint}" if hint else "")


# ---------------------------------------------------------------------------------------------
# per-ending checks: each returns the NIfTI header bytes (b"" for other formats) or raises
# ---------------------------------------------------------------------------------------------


def _check_nifti_header(path: Path, header: bytes, eof: bool, where: str = "") -> bytes:
    """Check (inflated) NIfTI header bytes: size field, length, magic."""
    size = nifti_header_size(header)
    if size is None:
        if len(header) < 4:
            raise DataError(path, f"not a NIfTI file{where} (only {len(header)} bytes)")
        if header[:2] == GZIP_MAGIC and where:
            raise DataError(path, "gzip-compressed twice: unpack it once (gunzip) and keep the .nii.gz ending")
        hint = identify(header)
        if hint is None and _text_start(header) is None:
            value = struct.unpack("<i", header[:4])[0]
            hint = f"header size {value}, expected 348 or 540"
        raise DataError(path, f"not a NIfTI file{where} ({hint or describe(header)})")
    if len(header) < size:
        if eof:
            raise DataError(path, f"truncated NIfTI header ({len(header)} of {size} bytes)")
        return b""  # not enough bytes sniffed to judge the rest; nibabel will
    magic = header[344:348] if size == 348 else header[4:8]
    if magic in (b"ni1\x00", b"ni2\x00"):
        raise DataError(
            path,
            f"NIfTI header of a .hdr/.img pair (magic {magic[:3].decode()!r}): its voxels are in a separate .img file; "
            "medswin reads single-file .nii/.nii.gz",
        )
    if magic not in (b"n+1\x00", b"n+2\x00"):
        raise DataError(path, f"not a NIfTI file{where} (header size {size} but no NIfTI magic: an Analyze 7.5 file?)")
    return header[:size]


def _check_nii(path: Path, head: bytes) -> bytes:
    if head[:2] == GZIP_MAGIC:
        raise DataError(path, "gzip-compressed: rename it to .nii.gz")
    return _check_nifti_header(path, head, eof=len(head) < HEAD_BYTES)


def _check_nii_gz(path: Path, head: bytes) -> bytes:
    if head[:2] != GZIP_MAGIC:
        if nifti_header_size(head):
            raise DataError(path, "not gzip-compressed (an uncompressed NIfTI?): rename it to .nii")
        raise DataError(path, f"not gzip-compressed ({identify(head) or describe(head)})")
    try:
        inner, eof = _inflate_start(head, 540)
    except zlib.error as exc:
        raise DataError(path, f"corrupt gzip data at the start of the file ({exc})") from None
    if len(inner) < 4 and not eof and len(head) == HEAD_BYTES:
        return b""  # an unusual gzip header (long name/comment field): leave it to nibabel
    return _check_nifti_header(path, inner, eof=eof or len(head) < HEAD_BYTES, where=" inside the gzip")


def _check_nrrd(path: Path, head: bytes) -> bytes:
    if not head.startswith(b"NRRD000"):
        raise DataError(path, _not_a("NRRD", head))
    return b""


def _check_metaimage(path: Path, head: bytes) -> bytes:
    first_lines = b"\n".join(head.splitlines()[:8])
    if _text_start(head) is None or not _METAIMAGE_LINE.search(first_lines):
        raise DataError(path, _not_a("MetaImage", head))
    return b""


def _check_dicom(path: Path, head: bytes) -> bytes:
    if not _looks_dicom(head):
        raise DataError(path, _not_a("DICOM", head))
    return b""


_CHECKS = {
    NIFTI_ENDINGS[0]: _check_nii_gz,
    NIFTI_ENDINGS[1]: _check_nii,
    ".nrrd": _check_nrrd,
    ".nhdr": _check_nrrd,
    ".mha": _check_metaimage,
    ".mhd": _check_metaimage,
    ".dcm": _check_dicom,
}
"""Content check per ending of :data:`medswin.data.formats.READABLE_ENDINGS` (a test keeps the two in step)."""
