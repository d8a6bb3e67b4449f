"""Digitally reconstructed radiographs (DRRs): coronal and sagittal X-ray views of a CT volume.

Swin-X2S learns 3D segmentation from two orthogonal X-rays; training pairs are made from CT
segmentation datasets by projecting each CT into two views and resampling its label onto a 3D grid
aligned with those views.

Geometry (RAS world coordinates, mm; the CT may have any orientation, its affine is honoured):

* attenuation relative to water ``mu = max(HU + 1000, 0) / 1000``; a DRR pixel is the line integral
  of ``mu`` along its ray (mm of water-equivalent path), before the optional min-max scaling;
* coronal view: rays along ``+y`` (posterior -> anterior), detector axes ``(x, z)``;
  sagittal view: rays along ``+x``, detector axes ``(y, z)``; both images are ``(H, W)`` with ``H``
  along the lateral (coronal) / antero-posterior (sagittal) axis and ``W`` along ``z``;
* parallel projection (default), or perspective (cone beam): a point source 1800 mm before the
  volume centre and the detector 2000 mm from the source (magnification 2000 / 1800 at the centre);
* the 3D label is resampled (nearest) onto the grid ``(H, H, W)`` = ``(x, y, z)`` centred on the
  volume, with the detector pixel spacing (divided by the magnification in perspective mode), so
  coronal pixel ``(i, j)`` looks through voxels ``(i, :, j)`` and sagittal pixel ``(k, j)`` through
  voxels ``(:, k, j)`` -- the layout Swin-X2S's dimension expansion assumes.

Everything is vectorised with ``torch.nn.functional.grid_sample`` (runs on the GPU when given CUDA
tensors); there is no Python loop over rays.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_write, write_text_atomic
from .errors import DataError
from .formats import NIFTI_ENDINGS
from .headers import short_error
from .io import Volume, load_volume, write_nifti
from .sniff import sniff_view

log = logging.getLogger(__name__)

SOURCE_TO_CENTRE_MM = 1800.0
SOURCE_TO_DETECTOR_MM = 2000.0
VIEWS = ("coronal", "sagittal")


@dataclass(frozen=True)
class DRRGeometry:
    """Detector ``(H, W)`` pixels of ``pixel_spacing`` mm, ``perspective`` or parallel rays, and the
    world centre the views and the label grid are built around."""

    height: int = 128
    width: int = 160
    pixel_spacing: float = 1.0
    perspective: bool = False
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def magnification(self) -> float:
        """Detector size / object size at the centre (1 for parallel rays)."""
        return SOURCE_TO_DETECTOR_MM / SOURCE_TO_CENTRE_MM if self.perspective else 1.0

    @property
    def voxel_spacing(self) -> float:
        """Spacing of the 3D label grid (object space at the centre)."""
        return self.pixel_spacing / self.magnification

    def label_affine(self) -> np.ndarray:
        """RAS affine of the ``(H, H, W)`` label grid."""
        s = self.voxel_spacing
        affine = np.diag([s, s, s, 1.0])
        offsets = np.array([(self.height - 1) / 2, (self.height - 1) / 2, (self.width - 1) / 2]) * s
        affine[:3, 3] = np.asarray(self.centre) - offsets
        return affine

    def view_affine(self, view: str) -> np.ndarray:
        """A 2D-as-3D affine for writing a view as NIfTI (detector axes, pixel spacing)."""
        affine = np.diag([self.pixel_spacing, self.pixel_spacing, 1.0, 1.0])
        affine[0, 3] = -(self.height - 1) / 2 * self.pixel_spacing
        affine[1, 3] = -(self.width - 1) / 2 * self.pixel_spacing
        return affine


def attenuation(hu: torch.Tensor) -> torch.Tensor:
    """Linear attenuation relative to water from Hounsfield units: ``max(HU + 1000, 0) / 1000``."""
    return torch.clamp(hu + 1000.0, min=0.0) / 1000.0


def fit_geometry(
    volume: Volume, height: int = 128, width: int = 160, perspective: bool = False, pixel_spacing: float | None = None
) -> DRRGeometry:
    """Geometry centred on the volume whose detector covers its whole extent (unless ``pixel_spacing`` is given)."""
    shape = np.array(volume.spatial_shape)
    corners = np.array([volume.world([a * (n - 1) for a, n in zip(c, shape)]) for c in np.ndindex(2, 2, 2)])
    lo, hi = corners.min(0), corners.max(0)
    centre = tuple(((lo + hi) / 2).tolist())
    if pixel_spacing is None:
        lateral = max(hi[0] - lo[0], hi[1] - lo[1])
        magnification = SOURCE_TO_DETECTOR_MM / SOURCE_TO_CENTRE_MM if perspective else 1.0
        pixel_spacing = float(max(lateral / max(height - 1, 1), (hi[2] - lo[2]) / max(width - 1, 1)) * magnification)
    return DRRGeometry(height, width, float(pixel_spacing), perspective, centre)  # type: ignore[arg-type]


def _world_to_grid(points: torch.Tensor, affine: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """World points ``(..., 3)`` -> ``grid_sample`` coordinates for a ``(1, 1, X, Y, Z)`` volume."""
    inv = torch.linalg.inv(affine)
    idx = points @ inv[:3, :3].T + inv[:3, 3]  # voxel indices (i, j, k)
    size = torch.tensor(shape, dtype=points.dtype, device=points.device)
    norm = 2.0 * idx / (size - 1).clamp(min=1) - 1.0  # align_corners=True
    return norm.flip(-1)  # grid_sample wants (z, y, x) for (D, H, W) = (X, Y, Z)


def _sample(volume: torch.Tensor, affine: torch.Tensor, points: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Values of ``volume`` ``(X, Y, Z)`` at world ``points`` ``(A, B, C, 3)`` (0 outside)."""
    grid = _world_to_grid(points, affine, tuple(volume.shape))[None]
    out = F.grid_sample(volume[None, None], grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out[0, 0]


def _ray_geometry(view: str, geom: DRRGeometry, half_extent: float, samples: int, device, dtype):
    """Sample points ``(H, W, N, 3)`` along every ray and the length each sample stands for ``(H, W, 1)``."""
    axis = 1 if view == "coronal" else 0  # rays along +y (coronal) or +x (sagittal)
    lateral = 0 if view == "coronal" else 1
    c = torch.tensor(geom.centre, dtype=dtype, device=device)
    e_ray = torch.zeros(3, dtype=dtype, device=device)
    e_ray[axis] = 1.0
    e_u = torch.zeros(3, dtype=dtype, device=device)
    e_u[lateral] = 1.0
    e_v = torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device)
    u = (torch.arange(geom.height, dtype=dtype, device=device) - (geom.height - 1) / 2) * geom.pixel_spacing
    v = (torch.arange(geom.width, dtype=dtype, device=device) - (geom.width - 1) / 2) * geom.pixel_spacing
    plane = u[:, None, None] * e_u + v[None, :, None] * e_v  # (H, W, 3) offsets on the detector plane
    if not geom.perspective:
        t = torch.linspace(-half_extent, half_extent, samples, dtype=dtype, device=device)
        points = c + plane[:, :, None, :] / geom.magnification + t[None, None, :, None] * e_ray
        step = torch.full(
            (geom.height, geom.width, 1), 2 * half_extent / max(samples - 1, 1), dtype=dtype, device=device
        )
        return points, step
    source = c - SOURCE_TO_CENTRE_MM * e_ray
    detector = c + (SOURCE_TO_DETECTOR_MM - SOURCE_TO_CENTRE_MM) * e_ray + plane  # (H, W, 3)
    direction = detector - source  # every ray reaches the detector plane at axial distance 2000 mm
    # the slab |axial - 1800| <= half_extent holds the volume: the same t-range for every ray
    t0 = (SOURCE_TO_CENTRE_MM - half_extent) / SOURCE_TO_DETECTOR_MM
    t1 = (SOURCE_TO_CENTRE_MM + half_extent) / SOURCE_TO_DETECTOR_MM
    t = torch.linspace(t0, t1, samples, dtype=dtype, device=device)
    points = source + t[None, None, :, None] * direction[:, :, None, :]
    step = direction.norm(dim=-1, keepdim=True) * (t1 - t0) / max(samples - 1, 1)  # slanted rays: longer steps
    return points, step


def project(
    volume: Volume, geom: DRRGeometry, view: str, samples: int | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Line integrals of attenuation ``(H, W)`` (mm water-equivalent) for ``view`` of a CT ``volume`` in HU."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    hu = torch.as_tensor(np.asarray(volume.array[0], dtype=np.float32), device=device)
    mu = attenuation(hu)
    affine = torch.as_tensor(volume.affine, dtype=torch.float32, device=device)
    shape = np.array(volume.spatial_shape)
    corners = np.array([volume.world([a * (n - 1) for a, n in zip(c, shape)]) for c in np.ndindex(2, 2, 2)])
    half_extent = float(np.linalg.norm(corners - np.asarray(geom.centre), axis=1).max())
    step_mm = min(volume.spacing) / 2
    n = samples or int(math.ceil(2 * half_extent / step_mm)) + 1
    points, step = _ray_geometry(view, geom, half_extent, n, mu.device, mu.dtype)
    # chunk over detector rows to bound memory (H x W x N x 3 points)
    rows = max(1, int(2**24 // max(1, geom.width * n)))
    out = torch.empty(geom.height, geom.width, dtype=mu.dtype, device=mu.device)
    for r0 in range(0, geom.height, rows):
        vals = _sample(mu, affine, points[r0 : r0 + rows])
        out[r0 : r0 + rows] = vals.sum(-1) * step[r0 : r0 + rows, :, 0]
    return out


def minmax(image: torch.Tensor) -> torch.Tensor:
    """Scale to [0, 1] (a constant image becomes 0)."""
    lo, hi = image.min(), image.max()
    return (image - lo) / (hi - lo) if hi > lo else torch.zeros_like(image)


def resample_label(label: Volume, geom: DRRGeometry, device: str | torch.device = "cpu") -> np.ndarray:
    """The label on the ``(H, H, W)`` view-aligned grid (nearest neighbour), int64."""
    lab = torch.as_tensor(np.asarray(label.array[0], dtype=np.float32), device=device)
    affine = torch.as_tensor(label.affine, dtype=torch.float32, device=device)
    target = torch.as_tensor(geom.label_affine(), dtype=torch.float32, device=device)
    idx = torch.stack(
        torch.meshgrid(
            torch.arange(geom.height, device=device),
            torch.arange(geom.height, device=device),
            torch.arange(geom.width, device=device),
            indexing="ij",
        ),
        -1,
    ).to(torch.float32)
    world = idx @ target[:3, :3].T + target[:3, 3]
    out = _sample(lab, affine, world, mode="nearest")
    return out.round().to(torch.int64).cpu().numpy()


def make_drrs(
    ct: Volume,
    label: Volume | None = None,
    height: int = 128,
    width: int = 160,
    perspective: bool = False,
    pixel_spacing: float | None = None,
    scale: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Both views (``coronal``, ``sagittal``: ``(H, W)`` float32 in [0, 1] when ``scale``), the
    view-aligned label (``(H, H, W)`` or None) and the ``geometry``."""
    geom = fit_geometry(ct, height, width, perspective, pixel_spacing)
    out: dict[str, Any] = {"geometry": geom}
    for view in VIEWS:
        img = project(ct, geom, view, device=device)
        out[view] = (minmax(img) if scale else img).cpu().numpy().astype(np.float32)
    out["label"] = resample_label(label, geom, device) if label is not None else None
    return out


def view_to_radiograph(view: np.ndarray) -> np.ndarray:
    """``(H, W)`` view -> a picture the usual way up: rows = ``z`` from superior (top) to inferior,
    columns = the detector's lateral axis (``x`` coronal, ``y`` sagittal) increasing to the right."""
    return np.ascontiguousarray(view.T[::-1])


def radiograph_to_view(picture: np.ndarray) -> np.ndarray:
    """Inverse of :func:`view_to_radiograph`: a 2D picture (e.g. a PNG X-ray) -> ``(H, W)`` view."""
    return np.ascontiguousarray(picture[::-1].T)


def write_drrs(result: dict[str, Any], out_dir: str | Path, stem: str = "") -> dict[str, Path]:
    """Write ``{stem}coronal``/``sagittal`` as 2D NIfTI ``(H, W)`` and 8-bit PNG (radiograph orientation,
    see :func:`view_to_radiograph`), ``{stem}label.nii.gz`` on the view-aligned grid, ``{stem}drr.json``."""
    import SimpleITK as sitk

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    geom: DRRGeometry = result["geometry"]
    written = {}
    for view in VIEWS:
        img = result[view]
        written[f"{view}_nii"] = write_nifti(img, geom.view_affine(view), out_dir / f"{stem}{view}.nii.gz")
        scaled = np.clip(minmax(torch.as_tensor(img)).numpy() * 255, 0, 255).astype(np.uint8)
        picture = sitk.GetImageFromArray(view_to_radiograph(scaled))
        written[f"{view}_png"] = atomic_write(
            out_dir / f"{stem}{view}.png", lambda tmp, pic=picture: sitk.WriteImage(pic, tmp)
        )
    if result.get("label") is not None:
        written["label"] = write_nifti(
            result["label"].astype(np.uint8), geom.label_affine(), out_dir / f"{stem}label.nii.gz"
        )
    meta = {
        "height": geom.height,
        "width": geom.width,
        "pixel_spacing_mm": geom.pixel_spacing,
        "perspective": geom.perspective,
        "centre_mm": list(geom.centre),
        "label_affine": geom.label_affine().tolist(),
        "source_to_centre_mm": SOURCE_TO_CENTRE_MM,
        "source_to_detector_mm": SOURCE_TO_DETECTOR_MM,
    }
    written["meta"] = write_text_atomic(out_dir / f"{stem}drr.json", json.dumps(meta, indent=2))
    return written


def load_view(path: str | Path) -> np.ndarray:
    """A view ``(H, W)`` float32 in [0, 1] from a 2D NIfTI (as written here) or a picture (PNG/JPEG,
    radiograph orientation: superior at the top).

    The file is sniffed first (:func:`medswin.data.sniff.sniff_view`): missing, empty, unreadable,
    with an ending other than ``.nii.gz``, ``.nii``, ``.png``, ``.jpg``, ``.jpeg``, or with content
    that does not match its ending, it is refused before any imaging library reads it.

    Args:
        path: the view file.

    Raises:
        DataError: naming the file and the problem.
    """
    import nibabel as nib
    import SimpleITK as sitk

    path = Path(path)
    facts = sniff_view(path)
    try:
        if facts.ending in NIFTI_ENDINGS:
            arr = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
            arr = arr.reshape(arr.shape[:2]) if arr.ndim == 3 and arr.shape[2] == 1 else arr
        else:
            img = sitk.ReadImage(str(path))
            pic = sitk.GetArrayFromImage(img).astype(np.float32)
            if pic.ndim == 3:  # colour picture: average the channels
                pic = pic.mean(-1)
            arr = radiograph_to_view(pic)
    except Exception as exc:
        raise DataError(path, f"cannot read the X-ray view ({short_error(exc)})") from None
    if arr.ndim != 2:
        raise DataError(path, f"an X-ray view is a 2D image, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(path, "the view contains NaN/inf")
    return minmax(torch.as_tensor(arr)).numpy().astype(np.float32)


def drr_from_files(
    ct_path: str | Path, label_path: str | Path | None, out_dir: str | Path, **kwargs: Any
) -> dict[str, Path]:
    """Read a CT (and label), make both DRRs and the aligned label, write them to ``out_dir``."""
    ct = load_volume(ct_path)
    if ct.channels != 1:
        raise DataError(ct_path, f"a CT for DRRs has one channel, this has {ct.channels}")
    label = load_volume(label_path) if label_path else None
    return write_drrs(make_drrs(ct, label, **kwargs), out_dir)
