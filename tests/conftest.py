"""Shared fixtures: deterministic seeds, and small synthetic datasets written in real layouts."""

from __future__ import annotations

import json

import pytest
import torch

from medswin.data.synthetic import make_phantom, write_synthetic_dataset


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


SYNTH_SPEC = {
    "synth-ct": {
        "description": "synthetic CT phantoms (tests)",
        "channel_names": ["CT"],
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "file_ending": ".nii.gz",
        "layout": "decathlon",
        "target_spacing": [1.5, 1.5, 2.0],
        "normalization": {"type": "ct", "a_min": -175, "a_max": 250},
        "roi_size": [64, 64, 32],
        "licence": "synthetic",
        "source": "medswin tests",
    }
}


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory):
    """A Decathlon-layout folder of 3 synthetic CT cases (64x64x40 at 1.5x1.5x2 mm) and its datasets.yaml."""
    root = tmp_path_factory.mktemp("synth")
    cases = [
        make_phantom((64, 64, 40), num_classes=3, modality="ct", spacing=(1.5, 1.5, 2.0), seed=i) for i in range(3)
    ]
    write_synthetic_dataset(
        root / "synth-ct", "decathlon", cases, channel_names=["CT"], labels={"background": 0, "organ": 1, "lesion": 2}
    )
    spec_file = root / "datasets.yaml"
    spec_file.write_text(json.dumps(SYNTH_SPEC))
    return root / "synth-ct", spec_file
