"""MEMO (marginal entropy over flips), pseudo-label self-training and the oracle's parameter sets:
what each loss is, that it drops, that only the chosen parameters move, and the CLI route."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from medswin.adaptation import METHODS, Memo, PseudoLabel, marginal_entropy, norm_affine_parameters, select_parameters
from medswin.data.synthetic import make_phantom
from medswin.models import create_model


class Toy(nn.Module):
    """A small conv net with the model contract (``encoder`` + head), GroupNorm inside the encoder."""

    size_divisor = 1

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.GELU())
        self.head = nn.Conv3d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _volume(shape=(16, 16, 16), seed: int = 1, gamma: float = 2.5) -> torch.Tensor:
    image = make_phantom(shape, num_classes=3, modality="mri", noise=0.05, seed=seed).image[0]
    image = np.clip(image, 0, None) ** gamma
    return torch.from_numpy(((image - image.mean()) / image.std()).astype(np.float32))[None, None]


def _toy() -> Toy:
    torch.manual_seed(0)
    return Toy().eval()


def test_marginal_entropy_values():
    k = 4
    uniform = torch.full((1, k, 2, 2, 2), 1 / k)
    one_hot = torch.zeros(1, k, 2, 2, 2)
    one_hot[:, 0] = 1
    two = torch.zeros(1, k, 2, 2, 2)
    two[:, :2] = 0.5  # the average of two confident views that disagree
    assert torch.allclose(marginal_entropy(uniform), torch.ones(1, 2, 2, 2), atol=1e-5)
    assert float(marginal_entropy(one_hot).max()) < 1e-4
    assert torch.allclose(marginal_entropy(two), torch.full((1, 2, 2, 2), math.log(2) / math.log(k)), atol=1e-5)
    half = torch.full((1, 2, 1, 1, 1), 0.5)  # regions: p = 0.5 is one bit
    assert torch.allclose(marginal_entropy(half, sigmoid=True), torch.ones(1, 1, 1, 1), atol=1e-5)


def test_memo_loss_is_the_entropy_of_the_flip_average_and_drops():
    model, image = _toy(), _volume()
    adapter = Memo(model, steps=3, lr=1e-2, roi_size=(16, 16, 16), amp="fp32")
    with torch.no_grad():  # one window = the volume: the loss is the flip-averaged entropy, computed directly
        views = [((), model(image)), *(((d,), model(image.flip(d)).flip(d)) for d in (2, 3, 4))]
        mean = sum(torch.softmax(out, 1) for _, out in views) / 4
        expected = float(marginal_entropy(mean).mean())
    report = adapter.adapt(image)
    assert report.losses[0] == pytest.approx(expected, abs=1e-5)
    assert report.losses[2] < report.losses[0]
    assert set(adapter.parameter_names) == {"encoder.1.weight", "encoder.1.bias"}


def test_pseudo_labels_are_fixed_at_the_first_step_and_the_loss_drops():
    model, image = _toy(), _volume()
    adapter = PseudoLabel(model, steps=4, lr=1e-2, threshold=0.6, roi_size=(16, 16, 16), amp="fp32")
    plan_targets = []
    original = adapter.pseudo_labels

    def spy(*args):
        plan_targets.append(original(*args))
        return plan_targets[-1]

    adapter.pseudo_labels = spy
    with torch.no_grad():
        probs = torch.softmax(model(image), 1)
    report = adapter.adapt(image)
    assert len(plan_targets) == 1  # made once per volume, not per step
    target, weight = plan_targets[0]
    confident = probs.max(1).values >= 0.6
    assert torch.equal(weight.bool(), confident) and torch.equal(target[confident], probs.argmax(1)[confident])
    assert 0 < confident.float().mean() < 1
    assert report.losses[-1] < report.losses[0]  # cross-entropy against the fixed targets
    adapter.adapt(image)  # episodic: a second call resets and builds the targets again
    assert len(plan_targets) == 2


def test_pseudo_label_without_confident_voxels_changes_nothing():
    model, image = _toy(), _volume()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = PseudoLabel(model, steps=2, threshold=1.0, roi_size=(16, 16, 16), amp="fp32").adapt(image)
    assert report.windows == 0 and report.losses == [0.0, 0.0]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"threshold must be in \(0.5, 1\]"):
        PseudoLabel(model, threshold=0.3)


def test_parameter_sets_of_the_oracle():
    torch.manual_seed(0)
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=3)
    names = {n for n, _ in model.named_parameters()}
    encoder = {f"encoder.{n}" for n, _ in model.encoder.named_parameters()}
    norms = {n for n, _ in norm_affine_parameters(model)}
    sets = {
        p: {n for n, _ in select_parameters(model, p)}
        for p in ("encoder-norms", "norms", "norms-biases", "decoder", "all")
    }
    assert sets["encoder-norms"] == norms & encoder and sets["norms"] == norms
    assert sets["norms-biases"] == norms | {n for n in names if n.endswith(".bias")} and sets["norms-biases"] > norms
    assert sets["decoder"] == names - encoder and sets["decoder"] and sets["all"] == names
    with pytest.raises(ValueError, match="has no .encoder module"):
        select_parameters(nn.Sequential(nn.Conv3d(1, 2, 1), nn.GroupNorm(1, 2)), "decoder")


def test_every_method_is_registered_under_its_cli_name():
    assert set(METHODS) == {"tent", "etta", "memo", "pseudo-label"}
    assert METHODS["memo"] is Memo and METHODS["pseudo-label"] is PseudoLabel


def test_cli_adapt_with_pseudo_labels(capsys, tmp_path):
    from medswin.cli import main
    from medswin.data.io import load_volume, write_nifti

    cases = tmp_path / "cases"
    ph = make_phantom((40, 30, 20), num_classes=3, modality="mri", spacing=(2.0, 2.0, 2.0), seed=3)
    image = np.clip(ph.image[0], 0, None) + 1.0
    image[:4] = 0  # a zero margin, as in a skull-stripped scan
    write_nifti(image * np.linspace(0.7, 1.3, 20)[None, None, :], ph.affine, cases / "case_0.nii.gz")
    args = [
        "adapt",
        "-i",
        str(cases),
        "-o",
        str(tmp_path / "adapted"),
        "--model",
        "swin_unetr_tiny",
        "--dataset",
        "mni-tissue",
        "--amp",
        "fp32",
        "--method",
        "pseudo-label",
        "--confidence",
        "0.6",
        "--adapt-steps",
        "1",
    ]
    assert main(args) == 0
    report = json.loads((tmp_path / "adapted" / "adaptation.json").read_text())
    settings = report["settings"]
    assert settings["method"] == "pseudo-label" and settings["confidence"] == 0.6
    assert len(report["cases"][0]["losses"]) == 1
    assert load_volume(tmp_path / "adapted" / "case_0.nii.gz").spatial_shape == (40, 30, 20)
    predict = ["predict", "-i", str(cases / "case_0.nii.gz"), "-o", str(tmp_path / "x.nii.gz")]
    assert main([*predict, "--model", "swin_unetr_tiny", "--dataset", "mni-tissue", "--confidence", "0.6"]) == 2
    assert "--confidence" in capsys.readouterr().err
    assert (
        main(
            [
                *predict,
                "--model",
                "swin_unetr_tiny",
                "--dataset",
                "mni-tissue",
                "--adapt",
                "memo",
                "--confidence",
                "0.6",
            ]
        )
        == 2
    )
    assert "--confidence is a pseudo-label option" in capsys.readouterr().err
