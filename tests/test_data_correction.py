"""Input-side corrections: N4 removes a known multiplicative field, histogram matching lands on the reference's
landmarks, both run inside the predictor's pipeline before the normalisation, and the CLI's errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medswin.cli import main
from medswin.data.correction import InputCorrection, histogram_landmarks, match_histogram, n4_correct
from medswin.data.io import write_nifti
from medswin.data.spec import load_dataset_specs
from medswin.inference import Predictor
from medswin.models import create_model


def _brain(seed: int = 0, shape=(40, 40, 40)) -> np.ndarray:
    """A skull-stripped-like image ``(1, *shape)``: random tissue intensities inside a box, zeros outside."""
    rng = np.random.default_rng(seed)
    x = np.zeros((1, *shape), np.float32)
    x[:, 5:35, 5:35, 5:35] = rng.uniform(50, 150, (30, 30, 30))
    return x


def test_n4_removes_a_smooth_multiplicative_field():
    x = _brain()
    field = np.linspace(0.6, 1.4, 40, dtype=np.float32)[None, None, None, :]
    biased = x * field
    corrected = n4_correct(biased)
    inside = x != 0
    assert np.corrcoef(biased[inside], x[inside])[0, 1] < 0.9
    assert np.corrcoef(corrected[inside], x[inside])[0, 1] > 0.99
    assert np.all(corrected[~inside] == 0)  # outside the brain stays zero
    with pytest.raises(ValueError, match=r"scan\.nii\.gz: N4 bias-field correction needs non-negative"):
        n4_correct(x - 100, source="scan.nii.gz")


def test_histogram_matching_lands_on_the_reference_landmarks():
    x, ref_image = _brain(0), _brain(1) * 0.5 + 20 * (_brain(1) != 0)
    reference = histogram_landmarks(ref_image)
    matched = match_histogram(x, reference)
    np.testing.assert_allclose(histogram_landmarks(matched), reference, rtol=1e-3)
    assert np.all(matched[x == 0] == 0)
    np.testing.assert_allclose(match_histogram(x, histogram_landmarks(x)), x, atol=1e-3)  # own landmarks: identity
    with pytest.raises(ValueError, match="histogram reference has shape"):
        match_histogram(np.concatenate([x, x]), reference)


def test_corrections_run_in_the_predictor_before_the_normalisation(tmp_path):
    spec = load_dataset_specs()["mni-tissue"]
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=spec.out_channels)
    x = _brain()
    field = np.linspace(0.6, 1.4, 40, dtype=np.float32)[None, None, None, :]
    path = write_nifti((x * field)[0], np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "biased.nii.gz")
    plain = Predictor(model, spec, roi_size=(64, 64, 32)).load(path)[0]["image"]
    n4 = Predictor(model, spec, roi_size=(64, 64, 32), correction=InputCorrection("n4")).load(path)[0]["image"]
    inside = torch.from_numpy(x != 0)
    truth = (x[0][x[0] != 0] - x[0][x[0] != 0].mean()) / x[0][x[0] != 0].std()
    # the pipeline's z-score of the N4-corrected image is close to the z-score of the unbiased one
    err_plain = float(np.abs(plain[inside].numpy() - truth).mean())
    err_n4 = float(np.abs(n4[inside].numpy() - truth).mean())
    assert err_n4 < 0.3 * err_plain
    ct = load_dataset_specs()["btcv"]
    ct_model = create_model("swin_unetr_tiny", in_channels=1, out_channels=ct.out_channels)
    with pytest.raises(ValueError, match="is CT .* N4 correction is for MRI"):
        Predictor(ct_model, ct, correction=InputCorrection("n4"))


def test_correction_arguments(tmp_path):
    with pytest.raises(ValueError, match="histmatch needs a reference"):
        InputCorrection("histmatch")
    with pytest.raises(ValueError, match="unknown input correction"):
        InputCorrection("clahe")


def test_cli_correction_errors(capsys, tmp_path):
    base = ["predict", "-i", "x.nii.gz", "-o", str(tmp_path), "--model", "swin_unetr_tiny", "--dataset", "mni-tissue"]
    assert main([*base, "--adapt", "histmatch"]) == 2
    assert "--adapt histmatch needs --reference IMAGE" in capsys.readouterr().err
    assert main([*base, "--reference", "ref.nii.gz"]) == 2
    assert "--reference is the histogram reference of --adapt histmatch / n4+histmatch" in capsys.readouterr().err
    assert main([*base, "--adapt", "n4+histmatch", "--reference", str(tmp_path / "missing.nii.gz")]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err
    assert main([*base, "--adapt", "n4", "--adapt-steps", "3"]) == 2
    assert "(--adapt n4 corrects the input, it trains nothing)" in capsys.readouterr().err
    ct = ["predict", "-i", "x.nii.gz", "-o", str(tmp_path), "--model", "swin_unetr_tiny", "--dataset", "btcv"]
    assert main([*ct, "--adapt", "n4"]) == 2
    assert "is CT (HU, no bias field): N4 correction is for MRI" in capsys.readouterr().err


def test_cli_adapt_defaults_to_n4_and_histmatch_follows_the_reference(capsys, tmp_path):
    x = _brain(2)
    field = np.linspace(0.6, 1.4, 40, dtype=np.float32)[None, None, None, :]
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    write_nifti((x * field)[0], affine, tmp_path / "cases" / "case_0.nii.gz")
    reference = write_nifti(_brain(3)[0] * 3.0, affine, tmp_path / "reference.nii.gz")
    common = ["--model", "swin_unetr_tiny", "--dataset", "mni-tissue", "--amp", "fp32"]
    assert main(["adapt", "-i", str(tmp_path / "cases"), "-o", str(tmp_path / "n4"), *common]) == 0
    report = json.loads((tmp_path / "n4" / "adaptation.json").read_text())
    assert report["settings"] == {"method": "n4", "reference": None} and report["cases"][0]["seconds"] > 0
    args = ["adapt", "-i", str(tmp_path / "cases"), "-o", str(tmp_path / "hm"), "--method", "n4+histmatch"]
    assert main([*args, "--reference", str(reference), *common]) == 0
    report = json.loads((tmp_path / "hm" / "adaptation.json").read_text())
    assert report["settings"] == {"method": "n4+histmatch", "reference": str(reference)}
    assert (tmp_path / "hm" / "case_0.nii.gz").is_file()
    capsys.readouterr()
