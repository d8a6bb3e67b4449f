"""Swin-X2S: dimension expansion, cross-view attention, shapes, the biplanar loss, and the pipeline
from a CT + label folder to 3D predictions from two views (synthetic spine phantoms)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medswin.cli import main
from medswin.data.io import load_volume
from medswin.data.spec import load_dataset_specs, parse_spec
from medswin.data.synthetic import make_spine_phantom, write_synthetic_dataset
from medswin.models import create_model, model_kind
from medswin.models.swin_x2s import CrossViewAttention, DimensionExpansion, SwinX2S
from medswin.training.losses import BiplanarLoss, base_loss


def test_dimension_expansion_copies_each_pixel_along_its_ray():
    x = torch.randn(2, 3, 8, 10)  # (B, c, h, w)
    expand = DimensionExpansion(depth=8)
    cor = expand(x, "coronal")  # (B, c, x, y, z): new axis y
    sag = expand(x, "sagittal")  # (B, c, x, y, z): new axis x
    assert cor.shape == (2, 3, 8, 8, 10) and sag.shape == (2, 3, 8, 8, 10)
    for k in range(8):
        assert torch.equal(cor[:, :, :, k, :], x)  # coronal pixel (i, j) at every y
        assert torch.equal(sag[:, :, k, :, :], x)  # sagittal pixel (k, j) at every x


def test_cross_view_attention_has_no_residual_and_is_shared():
    attn = CrossViewAttention(channels=16, heads=4, tokens=2 * 2 * 3)
    a, b = torch.randn(1, 16, 2, 2, 3), torch.randn(1, 16, 2, 2, 3)
    new_a, new_b = attn(a, b)
    assert new_a.shape == a.shape and new_b.shape == b.shape
    # each output depends only on the OTHER view's values (plus the query view's attention pattern);
    # swapping the inputs swaps the outputs: one set of weights serves both directions
    swapped_b, swapped_a = attn(b, a)
    torch.testing.assert_close(swapped_a, new_a)
    torch.testing.assert_close(swapped_b, new_b)
    # no residual: the output is a normalised mix, not the input plus something
    assert not torch.allclose(new_a, a, atol=1e-2)
    assert torch.allclose(new_a.mean(1), torch.zeros(1, 2, 2, 3), atol=1e-5)  # final LayerNorm


def test_non_square_views_and_train_eval_outputs():
    model = SwinX2S(1, 3, img_size=(64, 96), feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
    cor, sag = torch.randn(1, 1, 64, 96), torch.randn(1, 1, 64, 96)
    out = model(cor, sag)
    assert set(out) == {"coronal", "sagittal"} and out["coronal"].shape == (1, 3, 64, 64, 96)
    model.eval()
    with torch.no_grad():
        avg = model(cor, sag)
        model.train()
        torch.manual_seed(0)
    assert avg.shape == (1, 3, 64, 64, 96)
    with pytest.raises(ValueError, match=r"built for views of \(64, 96\)"):
        model(torch.randn(1, 1, 64, 64), torch.randn(1, 1, 64, 64))


@pytest.mark.slow
def test_paper_view_size_128_by_160():
    model = SwinX2S(1, 2, img_size=(128, 160), feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 128, 160), torch.randn(1, 1, 128, 160))
    assert out.shape == (1, 2, 128, 128, 160)


def test_biplanar_loss_is_dicece_plus_kl_averaged():
    spec = parse_spec(
        "x",
        {
            "description": "d",
            "task": "biplanar",
            "channel_names": ["DRR"],
            "labels": {"background": 0, "a": 1, "b": 2},
            "file_ending": ".nii.gz",
            "layout": "biplanar",
            "target_spacing": [1, 1, 1],
            "normalization": {"type": "none"},
            "roi_size": [8, 8, 8],
            "licence": "-",
            "source": "-",
        },
    )
    loss_fn = BiplanarLoss(base_loss(spec))
    c, s = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    y = torch.randint(0, 3, (2, 1, 4, 4, 4))
    pc, ps = F.softmax(c, 1), F.softmax(s, 1)
    kl_cs = (ps * (ps.log() - pc.log())).sum(1).mean()  # KL(p_s || p_c): the coronal view pulled to the sagittal
    kl_sc = (pc * (pc.log() - ps.log())).sum(1).mean()
    torch.testing.assert_close(BiplanarLoss.kl(c, s), kl_cs)
    dice = base_loss(spec)
    expected = (dice(c, y) + kl_cs + dice(s, y) + kl_sc) / 2
    torch.testing.assert_close(loss_fn({"coronal": c, "sagittal": s}, y), expected)
    assert float(BiplanarLoss.kl(c, c)) == pytest.approx(0.0, abs=1e-6)


SPINE_SPEC = {
    "spine-ct": {
        "description": "synthetic spine CT (tests)",
        "channel_names": ["CT"],
        "labels": {"background": 0, "L1": 1, "L2": 2, "L3": 3, "L4": 4},
        "file_ending": ".nii.gz",
        "layout": "decathlon",
        "target_spacing": [2, 2, 2],
        "normalization": {"type": "ct", "a_min": -1000, "a_max": 1000},
        "roi_size": [64, 64, 64],
        "licence": "synthetic",
        "source": "medswin tests",
    }
}


@pytest.mark.slow
def test_ct_folder_to_trained_swin_x2s_to_3d_predictions(tmp_path, capsys):
    spec_file = tmp_path / "spine.yaml"
    spec_file.write_text(json.dumps(SPINE_SPEC))
    cases = [make_spine_phantom((48, 48, 64), seed=i) for i in range(3)]
    ct_root = write_synthetic_dataset(
        tmp_path / "spine", "decathlon", cases, channel_names=["CT"], labels=SPINE_SPEC["spine-ct"]["labels"]
    )
    # 1. CT dataset -> biplanar dataset (through the CLI)
    out = tmp_path / "x2s"
    assert (
        main(
            [
                "data",
                "prepare-x2s",
                str(ct_root),
                "--dataset",
                "spine-ct",
                "--datasets",
                str(spec_file),
                "-o",
                str(out),
                "--size",
                "64",
                "64",
            ]
        )
        == 0
    )
    assert "swin_x2s_small" in capsys.readouterr().out
    meta = json.loads((out / "dataset.json").read_text())
    assert len(meta["training"]) == 3 and (out / "png" / "case_000_coronal.png").is_file()
    spec = load_dataset_specs([out / "datasets.yaml"])["spine-ct-x2s"]
    assert spec.task == "biplanar" and spec.layout == "biplanar"
    # 2. train the tiny preset (views 64 x 64) for a few steps through the CLI
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "spine-ct-x2s",
                "--datasets",
                str(out / "datasets.yaml"),
                "--data",
                str(out),
                "--model",
                "swin_x2s_tiny",
                "--out",
                str(run),
                "--epochs",
                "2",
                "--iterations-per-epoch",
                "2",
                "--lr",
                "1e-3",
                "--amp",
                "fp32",
                "--folds",
                "3",
                "--val-every",
                "2",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 4 and 0.0 <= summary["last_validation"]["dice_mean"] <= 1.0
    # 3. two views -> 3D labels on the view-aligned grid
    pred = tmp_path / "pred" / "case_000.nii.gz"
    assert (
        main(
            [
                "predict",
                "--model",
                str(run / "checkpoint_last.pt"),
                "-i",
                str(out / "imagesTr" / "case_000_coronal.nii.gz"),
                "-i2",
                str(out / "png" / "case_000_sagittal.png"),
                "-o",
                str(pred),
            ]
        )
        == 0
    )
    labels = load_volume(pred)
    truth = load_volume(out / "labelsTr" / "case_000.nii.gz")
    assert labels.spatial_shape == truth.spatial_shape == (64, 64, 64)
    np.testing.assert_allclose(labels.affine, truth.affine)
    assert set(np.unique(labels.array)) <= {0, 1, 2, 3, 4}
    # 4. evaluation with centroid errors and the ID rate
    capsys.readouterr()
    gt = tmp_path / "gt"
    gt.mkdir()
    shutil.copy(out / "labelsTr" / "case_000.nii.gz", gt / "case_000.nii.gz")
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(pred.parent),
                "--gt",
                str(gt),
                "--dataset",
                "spine-ct-x2s",
                "--datasets",
                str(out / "datasets.yaml"),
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "centroid error (mm)" in table and "ID rate" in table and "| L1 |" in table


def test_a_volume_model_refuses_a_biplanar_dataset(tmp_path):
    from medswin.training import TrainConfig, Trainer

    spec = parse_spec(
        "bp",
        {
            "description": "d",
            "task": "biplanar",
            "channel_names": ["DRR"],
            "labels": {"background": 0, "a": 1},
            "file_ending": ".nii.gz",
            "layout": "biplanar",
            "target_spacing": [1, 1, 1],
            "normalization": {"type": "none"},
            "roi_size": [64, 64, 64],
            "licence": "-",
            "source": "-",
        },
    )
    cfg = TrainConfig(model="swin_unetr_tiny", dataset="bp", data=str(tmp_path), out=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="provides two X-ray views"):
        Trainer(cfg, spec=spec, cases={"train": [], "val": []})
    assert model_kind(create_model("swin_x2s_tiny", in_channels=1, out_channels=2)) == "biplanar"


def test_biplanar_augmentation_flips_only_the_allowed_axes_and_keeps_views_and_label_aligned():
    from medswin.data.transforms import RandBiplanarAugmentd

    lab = torch.arange(4 * 5 * 6).reshape(1, 4, 5, 6)  # (1, x, y, z)
    cor, sag = lab.sum(2).float(), lab.sum(1).float()  # projections along y and x: (1, x, z), (1, y, z)
    sample = {"image_coronal": cor, "image_sagittal": sag, "label": lab}
    seen = set()
    default = RandBiplanarAugmentd(prob=0.5, max_shift=0.0)
    default.set_random_state(0)
    for _ in range(40):
        out = default(sample)
        assert torch.equal(out["label"].sum((1, 2)), lab.sum((1, 2)))  # z (head-foot) never flipped
        assert torch.equal(out["label"].sum((1, 3)), lab.sum((1, 3)))  # nor y (front-back)
        seen.add(torch.equal(out["label"], lab.flip(1)))
    assert seen == {True, False}  # left-right flips happen
    every = RandBiplanarAugmentd(prob=1.0, max_shift=0.0, flip_axes=("x", "y", "z"))
    out = every(sample)
    flipped = lab.flip(1, 2, 3)
    assert torch.equal(out["label"], flipped)
    assert torch.equal(out["image_coronal"], flipped.sum(2).float()) and torch.equal(
        out["image_sagittal"], flipped.sum(1).float()
    )
    with pytest.raises(ValueError, match="flip_axes"):
        RandBiplanarAugmentd(flip_axes=("w",))
