"""MONAI pipelines from a DatasetSpec: BraTS regions (2021 and 2023), training patches, Invertd round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses

from medswin.data.datalist import build_datalist, to_monai
from medswin.data.io import write_nifti
from medswin.data.spec import get_dataset_spec
from medswin.data.synthetic import make_brats_phantom, make_phantom, write_synthetic_dataset
from medswin.data.transforms import (
    LabelToRegions,
    infer_transforms,
    invert_transforms,
    train_transforms,
    val_transforms,
)

AFFINE = np.array([[0.0, -0.9, 0.0, 10.0], [-0.8, 0.0, 0.0, 20.0], [0.0, 0.0, 3.0, -30.0], [0, 0, 0, 1]])


def test_brats_2021_regions_equal_monai():
    label = np.random.default_rng(0).choice([0, 1, 2, 4], size=(1, 6, 7, 8))
    ours = LabelToRegions(get_dataset_spec("brats2021").regions)(label)
    theirs = ConvertToMultiChannelBasedOnBratsClasses()(label[0])
    np.testing.assert_array_equal(ours, np.asarray(theirs, dtype=np.float32))  # TC, WT, ET


def test_brats_2023_regions_use_label_3_for_enhancing():
    label = torch.tensor([0, 1, 2, 3]).view(1, 4, 1, 1)
    regions = LabelToRegions(get_dataset_spec("brats2023").regions)(label)
    expected = torch.tensor([[0, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.float32)  # TC, WT, ET
    torch.testing.assert_close(regions[:, :, 0, 0], expected)


def test_infer_pipeline_inverts_to_the_input_grid(tmp_path):
    ph = make_phantom((40, 36, 20), num_classes=4, spacing=(0.8, 0.9, 3.0), modality="ct", seed=1)
    path = write_nifti(ph.image[0], AFFINE, tmp_path / "img.nii.gz")
    infer = infer_transforms(get_dataset_spec("btcv"))
    d = infer({"image": str(path)})
    assert tuple(d["image"].shape) != (1, 40, 36, 20)  # resampled to 1.5 x 1.5 x 2 mm, RAS
    np.testing.assert_allclose(np.diag(np.asarray(d["image"].affine))[:3], (1.5, 1.5, 2.0))
    assert float(d["image"].max()) <= 1.0 and float(d["image"].min()) >= 0.0  # CT window [-175, 250] -> [0, 1]
    d["pred"] = (d["image"] > 0.5).float()
    out = invert_transforms(infer, "pred", nearest=True)(d)
    assert tuple(out["pred"].shape) == (1, 40, 36, 20)
    np.testing.assert_allclose(np.asarray(out["pred"].affine), AFFINE, atol=1e-5)
    # the inverted mask overlaps the bright objects of the original image
    bright = ph.image[0] > 100
    assert (out["pred"][0].numpy() > 0)[bright].mean() > 0.8


@pytest.mark.parametrize("year,et", [(2021, 4), (2023, 3)])
def test_brats_training_pipeline_gives_region_patches(tmp_path, year, et):
    cases = [make_brats_phantom((48, 48, 40), enhancing_label=et, seed=0)]
    root = write_synthetic_dataset(tmp_path / "b", "brats", cases, brats_year=year)
    spec = get_dataset_spec(f"brats{year}")
    item = to_monai(build_datalist(root, spec)["training"])[0]
    samples = train_transforms(spec, roi_size=(32, 32, 32), num_samples=2)(item)
    assert len(samples) == 2
    for s in samples:
        assert tuple(s["image"].shape) == (4, 32, 32, 32) and tuple(s["label"].shape) == (3, 32, 32, 32)
        # regions nest: ET inside TC inside WT
        tc, wt, et_mask = s["label"]
        assert bool((et_mask <= tc).all()) and bool((tc <= wt).all())
    val = val_transforms(spec)(item)
    brain = val["image"][0] != 0
    assert abs(float(val["image"][0][brain].mean())) < 1e-3  # nonzero z-score per channel
    assert float(val["label"][2].sum()) > 0  # the enhancing region survived the conversion


@pytest.mark.parametrize("roi", [(32, 16, 16), (16, 32, 16), (32, 32, 16)])
def test_every_training_patch_has_the_roi_shape_so_a_batch_stacks(tmp_path, roi):
    """A patch that is not square in the rotation plane is never turned by 90 degrees (it would not stack)."""
    ph = make_phantom((40, 40, 24), num_classes=3, spacing=(1.5, 1.5, 2.0), modality="ct", seed=3)
    img = write_nifti(ph.image[0], ph.affine, tmp_path / "i.nii.gz")
    lab = write_nifti(ph.label, ph.affine, tmp_path / "l.nii.gz")
    pipeline = train_transforms(get_dataset_spec("btcv"), roi_size=roi, num_samples=4)
    pipeline.set_random_state(0)
    shapes = {tuple(s["image"].shape[1:]) for _ in range(10) for s in pipeline({"image": str(img), "label": str(lab)})}
    assert shapes == {roi}  # 40 patches: rot90 at p = 0.2 would have turned some of them
    rotations = [t for t in pipeline.transforms if type(t).__name__ == "RandRotate90d"]
    assert len(rotations) == (roi[0] == roi[1])


def test_training_patches_hit_foreground(tmp_path):
    ph = make_phantom((64, 64, 40), num_classes=3, spacing=(1.5, 1.5, 2.0), modality="ct", seed=2)
    img = write_nifti(ph.image[0], ph.affine, tmp_path / "i.nii.gz")
    lab = write_nifti(ph.label, ph.affine, tmp_path / "l.nii.gz")
    spec = get_dataset_spec("btcv")
    samples = train_transforms(spec, roi_size=(32, 32, 32), num_samples=4, pos=1, neg=0)(
        {"image": str(img), "label": str(lab)}
    )
    assert all(float((s["label"] > 0).sum()) > 0 for s in samples)  # pos=1, neg=0: every patch centred on foreground
