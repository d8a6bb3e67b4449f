"""DRRs: analytic line integrals, geometry (parallel vs cone beam), view orientation, label alignment, I/O."""

from __future__ import annotations

import numpy as np
import pytest

from medswin.cli import main
from medswin.data import DataError
from medswin.data.drr import (
    DRRGeometry,
    attenuation,
    load_view,
    make_drrs,
    project,
    radiograph_to_view,
    view_to_radiograph,
    write_drrs,
)
from medswin.data.io import Volume, load_volume, write_nifti

N = 48


def _volume(mask: np.ndarray, hu: float = 0.0, affine: np.ndarray | None = None) -> Volume:
    """Object of ``hu`` in air (-1000 HU), 1 mm voxels centred on the origin."""
    if affine is None:
        affine = np.eye(4)
        affine[:3, 3] = -(np.array(mask.shape) - 1) / 2
    return Volume(np.where(mask, hu, -1000.0)[None].astype(np.float32), affine, "phantom")


def _coords(shape=(N, N, N)):
    return np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij"), -1)


def test_attenuation_is_relative_to_water():
    import torch

    mu = attenuation(torch.tensor([-1000.0, -1200.0, 0.0, 1000.0]))
    assert mu.tolist() == [0.0, 0.0, 1.0, 2.0]


def test_line_integrals_through_a_sphere_are_chord_lengths():
    r = 15.0
    # partial-volume sphere: each voxel holds the fraction of water it covers (a linear ramp over one
    # voxel at the surface), so the integral is the chord length up to sampling error, not staircase error
    fraction = np.clip(r - np.sqrt((_coords() ** 2).sum(-1)) + 0.5, 0.0, 1.0)
    sphere = fraction > 0
    affine = np.eye(4)
    affine[:3, 3] = -(N - 1) / 2
    water = Volume((fraction * 1000.0 - 1000.0)[None].astype(np.float32), affine, "sphere")
    geom = DRRGeometry(N, N, 1.0, False, (0.0, 0.0, 0.0))
    cor = project(water, geom, "coronal").numpy()
    # pixel (i, j) sits at lateral offset (i - 23.5), axial (j - 23.5): the central pixels are 0.5 mm off in both
    for i, j in [(23, 23), (23, 30), (16, 23)]:
        d2 = (i - (N - 1) / 2) ** 2 + (j - (N - 1) / 2) ** 2
        assert cor[i, j] == pytest.approx(2 * np.sqrt(r * r - d2), abs=0.15)
    assert cor[0, 0] == 0.0  # rays missing the sphere see only air
    # bone (HU 1000, mu 2) doubles the water sphere's integral
    solid = project(_volume(sphere, 1000.0), geom, "coronal").numpy()
    assert solid[23, 23] == pytest.approx(2 * project(_volume(sphere, 0.0), geom, "coronal").numpy()[23, 23], rel=1e-4)


def test_cube_gives_its_side_on_every_ray_through_it():
    cube = (np.abs(_coords()) <= 10).all(-1)  # 20 voxels along each axis
    geom = DRRGeometry(N, N, 1.0, False, (0.0, 0.0, 0.0))
    for view in ("coronal", "sagittal"):
        img = project(_volume(cube), geom, view).numpy()
        assert np.allclose(img[18:30, 18:30], 20.0, atol=0.6)
        assert img[2, 2] == 0.0


def test_perspective_magnifies_and_keeps_the_central_ray():
    sphere = (_coords() ** 2).sum(-1) <= 12.0**2
    vol = _volume(sphere)
    parallel = project(vol, DRRGeometry(64, 64, 1.0, False, (0.0, 0.0, 0.0)), "coronal").numpy()
    cone = project(vol, DRRGeometry(64, 64, 1.0, True, (0.0, 0.0, 0.0)), "coronal").numpy()
    width_parallel = (parallel[:, 31:33].max(1) > 0.5).sum()
    width_cone = (cone[:, 31:33].max(1) > 0.5).sum()
    assert width_cone > width_parallel  # the cone beam magnifies ...
    assert width_cone / width_parallel == pytest.approx(2000 / 1800, abs=0.12)  # ... by about 2000 / 1800
    # the central ray is perpendicular to the detector in both geometries: same path length
    assert cone[31:33, 31:33].mean() == pytest.approx(parallel[31:33, 31:33].mean(), rel=0.02)


def _centre_of_mass(img: np.ndarray) -> np.ndarray:
    idx = np.indices(img.shape)
    return np.array([(i * img).sum() / img.sum() for i in idx])


def test_views_follow_the_documented_orientation():
    geom = DRRGeometry(N, N, 1.0, False, (0.0, 0.0, 0.0))
    base = (_coords() ** 2).sum(-1) <= 36
    moved_x = (((_coords() - np.array([8, 0, 0])) ** 2).sum(-1)) <= 36
    moved_y = (((_coords() - np.array([0, 8, 0])) ** 2).sum(-1)) <= 36
    com = {
        name: {v: _centre_of_mass(project(_volume(m), geom, v).numpy()) for v in ("coronal", "sagittal")}
        for name, m in (("base", base), ("x", moved_x), ("y", moved_y))
    }
    # +x: the coronal view's lateral axis (H) moves by 8 pixels; the sagittal view (rays along x) does not change
    assert com["x"]["coronal"] - com["base"]["coronal"] == pytest.approx([8, 0], abs=0.2)
    assert com["x"]["sagittal"] == pytest.approx(com["base"]["sagittal"], abs=0.2)
    # +y: the sagittal view's lateral axis moves, the coronal one (rays along y) does not
    assert com["y"]["sagittal"] - com["base"]["sagittal"] == pytest.approx([8, 0], abs=0.2)
    assert com["y"]["coronal"] == pytest.approx(com["base"]["coronal"], abs=0.2)


def test_non_ras_ct_projects_like_its_ras_twin():
    rng = np.random.default_rng(0)
    mask = np.zeros((N, N, N), bool)
    mask[10:30, 14:40, 5:25] = True
    mask &= rng.random(mask.shape) > 0.3
    ras = _volume(mask)
    flipped_affine = ras.affine @ np.diag([-1.0, 1.0, -1.0, 1.0])
    flipped_affine[:3, 3] = ras.world([N - 1, 0, N - 1])
    flipped = Volume(ras.array[:, ::-1, :, ::-1].copy(), flipped_affine, "flipped")
    geom = DRRGeometry(N, N, 1.0, False, (0.0, 0.0, 0.0))
    for view in ("coronal", "sagittal"):
        np.testing.assert_allclose(project(flipped, geom, view).numpy(), project(ras, geom, view).numpy(), atol=1e-4)


def test_label_grid_lines_up_with_the_views():
    cube = (np.abs(_coords() - np.array([5, -7, 3])) <= 6).all(-1)
    vol = _volume(cube, 500.0)
    label = Volume(cube[None].astype(np.float32) * 2, vol.affine, "label")
    result = make_drrs(vol, label, height=N, width=N, pixel_spacing=1.0, scale=False)
    lab = result["label"]
    assert lab.shape == (N, N, N) and set(np.unique(lab)) == {0, 2}
    # coronal pixel (i, j) looks through voxels (i, :, j); sagittal pixel (k, j) through (:, k, j)
    assert np.array_equal(lab.any(1), result["coronal"] > 1.0)
    assert np.array_equal(lab.any(0), result["sagittal"] > 1.0)


def test_write_and_read_views_in_radiograph_orientation(tmp_path):
    rng = np.random.default_rng(1)
    view = rng.random((32, 48)).astype(np.float32)
    picture = view_to_radiograph(view)
    assert picture.shape == (48, 32) and np.array_equal(radiograph_to_view(picture), view)
    sphere = (_coords((32, 32, 48)) ** 2).sum(-1) <= 100
    vol = _volume(sphere, 300.0)
    result = make_drrs(vol, Volume(sphere[None].astype(np.float32), vol.affine, "l"), height=32, width=48)
    written = write_drrs(result, tmp_path)
    for v in ("coronal", "sagittal"):
        from_png = load_view(written[f"{v}_png"])
        from_nii = load_view(written[f"{v}_nii"])
        assert from_png.shape == from_nii.shape == (32, 48)
        assert np.abs(from_png - result[v]).max() < 1 / 255 + 1e-6  # 8-bit rounding only
        np.testing.assert_allclose(from_nii, result[v], atol=1e-6)
    lab = load_volume(written["label"])
    np.testing.assert_allclose(lab.affine, result["geometry"].label_affine())


def test_drr_cli(tmp_path, capsys):
    sphere = (_coords((32, 32, 40)) ** 2).sum(-1) <= 100
    vol = _volume(sphere, 400.0)
    ct = write_nifti(vol.array[0], vol.affine, tmp_path / "ct.nii.gz")
    lab = write_nifti(sphere.astype(np.uint8), vol.affine, tmp_path / "lab.nii.gz")
    assert (
        main(["data", "drr", str(ct), str(lab), "-o", str(tmp_path / "out"), "--size", "32", "64", "--perspective"])
        == 0
    )
    out = capsys.readouterr().out
    assert "coronal.png" in out and "label.nii.gz" in out
    assert load_volume(tmp_path / "out" / "label.nii.gz").spatial_shape == (32, 32, 64)


# ------------------------------------------------------------------ bad view files: refused before any reader


def _refused(path, fragment):
    with pytest.raises(DataError) as err:
        load_view(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and fragment in msg and "\n" not in msg, msg


@pytest.mark.parametrize("name", ["coronal.nii.gz", "coronal.png"])
def test_empty_view_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    _refused(path, "empty file (0 bytes)")


def test_text_file_named_like_a_nifti_view(tmp_path):
    path = tmp_path / "coronal.nii.gz"
    path.write_text("coronal view goes here\n")
    _refused(path, "not gzip-compressed (starts with text: 'coronal view goes here')")


def test_view_with_an_unsupported_ending(tmp_path):
    path = tmp_path / "coronal.txt"
    path.write_text("0 1 2\n3 4 5\n")
    _refused(path, "unsupported file type '.txt' (X-ray views are .nii.gz, .nii, .png, .jpg, .jpeg)")


def test_view_picture_with_the_wrong_content(tmp_path):
    path = tmp_path / "coronal.png"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(60))  # a JPEG signature
    _refused(path, "not a PNG file (its content looks like a JPEG picture: rename it to .jpg)")
    _refused(tmp_path / "missing.png", "file not found")


def test_jpeg_view_loads(tmp_path):
    import SimpleITK as sitk

    picture = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (32, 1))  # (rows, columns): a left-right ramp
    path = tmp_path / "view.JPG"
    sitk.WriteImage(sitk.GetImageFromArray(picture), str(path))
    view = load_view(path)
    assert view.shape == (48, 32) and view.min() == 0.0 and view.max() == 1.0
    np.testing.assert_allclose(view, radiograph_to_view(picture.astype(np.float32) / 255), atol=0.03)
