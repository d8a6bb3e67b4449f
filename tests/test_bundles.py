"""MONAI bundles: MONAI's verifiers, every config instantiated, training / evaluation / inference / export
end to end on tiny synthetic data in each bundle's layout, DDP under a one-process gloo group, and the
mni-tissue bundle on the real demo data through plain ``python -m monai.bundle``."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medswin.bundle import (
    BiplanarPair,
    RegionsToLabelsd,
    check_targets,
    datalist,
    export_bundle,
    export_bundle_onnx,
    instantiate_components,
    list_bundles,
    resolve_bundle,
    run_bundle,
    schema_file,
    trace_input_shape,
    verify_bundle,
)
from medswin.cli import main
from medswin.data.spec import get_dataset_spec
from medswin.data.synthetic import make_brats_phantom, make_phantom, make_spine_phantom, write_synthetic_dataset
from medswin.models import create_model

REPO = Path(__file__).resolve().parents[1]
BUNDLES = list_bundles()
# what each bundle promises (metadata): input channels, output channels, labels/regions
EXPECTED = {
    "swin_unetr_btcv": (1, 14, "btcv"),
    "swin_unetr_brats": (4, 3, "brats2021"),
    "swin_unetr_mni_tissue": (1, 4, "mni-tissue"),
    "ds_transunet_btcv": (1, 14, "btcv"),
    "cswin_unet_prostate": (3, 2, "prostate-bpmri"),
    "swin_x2s_spine": (2, 26, "verse2020"),
}


def _train_config(name: str) -> dict:
    return json.loads((REPO / "bundles" / name / "configs" / "train.json").read_text())


def tiny(name: str) -> dict:
    """Overrides for the tiny preset at test sizes (64^3 volumes; 64x64x16 for the anisotropic prostate model;
    64x64 views for Swin-X2S)."""
    model = _train_config(name)["model_name"]
    out: dict = {"model_name": model.rsplit("_", 1)[0] + "_tiny", "num_workers": 0}
    if name == "swin_x2s_spine":
        out.update({"view_size": [64, 64], "_meta_#network_data_format#inputs#image#spatial_shape": [64, 64]})
    else:
        out["roi_size"] = [64, 64, 16] if name == "cswin_unet_prostate" else [64, 64, 64]
    return out


def test_the_six_bundles_exist_with_every_file_of_the_bundle_layout():
    assert BUNDLES == sorted(EXPECTED)
    for name in BUNDLES:
        root = REPO / "bundles" / name
        for rel in (
            "configs/metadata.json",
            "configs/train.json",
            "configs/inference.json",
            "configs/evaluate.json",
            "configs/multi_gpu_train.json",
            "configs/logging.conf",
            "docs/README.md",
            "LICENSE",
        ):
            assert (root / rel).is_file(), f"{name}: {rel}"
        assert "Published" in (root / "docs" / "README.md").read_text() or name == "swin_unetr_mni_tissue"


def test_committed_bundles_equal_the_generator_output():
    spec = importlib.util.spec_from_file_location("bundles_generate", REPO / "bundles" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        assert module.main(["--check"]) == 0, "run: python bundles/generate.py"
    finally:
        del sys.modules[spec.name]


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_describes_the_network(name):
    meta = json.loads((REPO / "bundles" / name / "configs" / "metadata.json").read_text())
    c_in, c_out, dataset = EXPECTED[name]
    spec = get_dataset_spec(dataset)
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == c_in and pred["num_channels"] == c_out
    assert list(pred["channel_def"].values()) == list(spec.output_names)
    assert meta["data_source"] == spec.source and "Research only" in meta["intended_use"]
    if name == "cswin_unet_prostate":  # anisotropic: the thick-slice axis is divided by 8, not 32
        assert image["spatial_shape"] == ["32*n", "32*n", "8*n"]
    elif name == "swin_x2s_spine":
        assert image["spatial_shape"] == [128, 160] and pred["spatial_shape"] == [128, 128, 160]
    else:
        assert image["spatial_shape"] == ["32*n"] * 3


@pytest.mark.parametrize("name", BUNDLES)
def test_monai_verifiers_pass_with_the_tiny_preset(name):
    lines = verify_bundle(name, tiny(name))
    assert len(lines) == 3 and "valid against meta_schema_20220324.json" in lines[0]


def test_schema_rejects_incomplete_or_malformed_metadata(tmp_path):
    from monai.bundle import verify_metadata

    good = json.loads((REPO / "bundles" / "swin_unetr_btcv" / "configs" / "metadata.json").read_text())
    schema = str(schema_file(REPO / "bundles" / "swin_unetr_btcv"))
    bad_cases = {
        "missing": {k: v for k, v in good.items() if k != "network_data_format"},
        "shape": json.loads(json.dumps(good).replace('"32*n"', '"n32"', 1)),
        "channels": json.loads(json.dumps(good).replace('"num_channels": 1', '"num_channels": 0', 1)),
    }
    for label, meta in bad_cases.items():
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(meta))
        with pytest.raises(ValueError, match="Failed validating"):
            verify_metadata(meta_file=str(path), filepath=schema)
    (tmp_path / "good.json").write_text(json.dumps(good))
    verify_metadata(meta_file=str(tmp_path / "good.json"), filepath=schema)


def test_static_config_check_catches_drift_and_unknown_targets(tmp_path):
    config = {
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "img_size": 96},  # MONAI #8300 style
        "net": {
            "_target_": "medswin.models.create_model",
            "name": "swin_unetr_tiny",
            "in_channels": 1,
            "out_channels": 2,
        },
        "gone": [{"_target_": "medswin.no_such_thing"}],
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    problems = check_targets(path)
    assert len(problems) == 2
    assert "inferer" in problems[0] and "'img_size'" in problems[0]
    assert "gone#0" in problems[1] and "does not resolve" in problems[1]


def test_biplanar_pair_is_the_two_view_model_with_one_input():
    model = create_model("swin_x2s_tiny", in_channels=1, out_channels=3).eval()
    pair = BiplanarPair(model).eval()
    cor, sag = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        out = pair(torch.cat([cor, sag], 1))
        torch.testing.assert_close(out, model(cor, sag), rtol=0, atol=0)
    assert out.shape == (1, 3, 64, 64, 64) and pair.in_channels == 2 and pair.out_channels == 3
    with pytest.raises(ValueError, match=r"stacked as \(B, 2, H, W\)"):
        pair(cor)
    with pytest.raises(ValueError, match="wraps a biplanar model"):
        BiplanarPair(create_model("swin_unetr_tiny", in_channels=1, out_channels=2))


def test_regions_to_labels_paints_nested_brats_regions():
    regions = get_dataset_spec("brats2021").regions  # TC [1, 4], WT [1, 2, 4], ET [4]
    probs = torch.zeros(3, 4, 1, 1)
    probs[1, 0:4] = 0.9  # WT everywhere
    probs[0, 1:4] = 0.8  # TC inside
    probs[2, 2] = 0.7  # ET at one voxel
    probs[1, 3], probs[0, 3] = 0.9, 0.4  # TC below threshold at the last voxel
    out = RegionsToLabelsd("pred", regions)({"pred": probs})["pred"]
    assert out.shape == (1, 4, 1, 1)
    assert out[0, :, 0, 0].tolist() == [2, 1, 4, 2]
    with pytest.raises(ValueError, match="2 channels for 3 regions"):
        RegionsToLabelsd("pred", regions)({"pred": probs[:2]})


def test_datalist_splits_and_inference_inputs(tmp_path):
    cases = [make_phantom((16, 16, 16), num_classes=2, seed=i) for i in range(3)]
    root = write_synthetic_dataset(tmp_path / "flat", "flat", cases)
    train, val = datalist(root, "training"), datalist(root, "validation")
    assert (len(train), len(val)) == (2, 1)  # 3 cases: fold 0 of a 3-fold split
    assert {c["case"] for c in train}.isdisjoint({c["case"] for c in val})
    assert all(Path(c["image"]).is_file() and Path(c["label"]).is_file() for c in train + val)
    assert [Path(c["image"]).name for c in datalist(root, "inference")] == [
        "case_000.nii.gz",
        "case_001.nii.gz",
        "case_002.nii.gz",
    ]
    with pytest.raises(ValueError, match="section must be"):
        datalist(root, "test")
    with pytest.raises(Exception, match="dataset folder not found"):
        datalist(tmp_path / "missing", "training")


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------


def make_data(name: str, root: Path) -> Path:
    """A tiny synthetic dataset in the bundle's own layout."""
    if name in ("swin_unetr_btcv", "ds_transunet_btcv"):
        cases = [
            make_phantom((64, 64, 64), num_classes=4, modality="ct", spacing=(1.5, 1.5, 2.0), seed=i) for i in range(2)
        ]
        return write_synthetic_dataset(root / "btcv", "btcv", cases, channel_names=["CT"])
    if name == "swin_unetr_brats":
        cases = [make_brats_phantom((64, 64, 64), seed=i) for i in range(2)]
        return write_synthetic_dataset(root / "brats", "brats", cases, channel_names=["FLAIR", "T1", "T1ce", "T2"])
    if name == "swin_unetr_mni_tissue":
        cases = [make_phantom((64, 64, 64), num_classes=4, spacing=(2.0, 2.0, 2.0), seed=i) for i in range(2)]
        return write_synthetic_dataset(root / "mni", "decathlon", cases, channel_names=["T1"])
    if name == "cswin_unet_prostate":
        cases = [
            make_phantom((64, 64, 16), num_classes=2, channels=3, spacing=(0.5, 0.5, 3.0), seed=i) for i in range(2)
        ]
        return write_synthetic_dataset(
            root / "prostate",
            "nnunet",
            cases,
            channel_names=["T2W", "ADC", "DWI"],
            labels={"background": 0, "csPCa": 1},
        )
    from medswin.data.biplanar import prepare_biplanar

    cases = [make_spine_phantom((48, 48, 64), seed=i) for i in range(2)]
    ct = write_synthetic_dataset(root / "spine-ct", "flat", cases, channel_names=["CT"])
    return prepare_biplanar(ct, root / "spine-x2s", get_dataset_spec("verse2020"), height=64, width=64)


def _inputs_and_outputs(name: str, data: Path, out_dir: Path) -> list[tuple[Path, Path]]:
    """(input whose grid the prediction must have, prediction file) for every inference input."""
    if name == "swin_x2s_spine":
        return [
            (p, out_dir / f"{p.name.removesuffix('.nii.gz')}_seg.nii.gz")
            for p in sorted((data / "labelsTr").glob("*.nii.gz"))
        ]
    items = datalist(data, "inference", EXPECTED[name][2])
    firsts = [Path(it["image"][0] if isinstance(it["image"], list) else it["image"]) for it in items]
    return [(p, out_dir / f"{p.name.removesuffix('.nii.gz')}_seg.nii.gz") for p in firsts]


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_train_evaluate_infer_export_end_to_end(name, tmp_path):
    data = make_data(name, tmp_path / "data")
    run_root = tmp_path / "bundle_root"
    ov = {**tiny(name), "dataset_dir": str(data), "bundle_root": str(run_root)}
    spec = get_dataset_spec(EXPECTED[name][2])
    # every component of every config instantiates on this data
    for config in ("train", "evaluate", "inference"):
        built = instantiate_components(name, config, ov)
        assert isinstance(built["network_def"], torch.nn.Module)
        engine = built["train#trainer"] if config == "train" else built["evaluator"]
        assert type(engine).__name__ == ("SupervisedTrainer" if config == "train" else "SupervisedEvaluator")

    # 2 training iterations, validation after the epoch saves the best model
    run_bundle(name, "train", {**ov, "max_epochs": 1, "epoch_length": 2, "val_interval": 1, "num_samples": 1})
    ckpt = run_root / "models" / "model.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    net = instantiate_components(name, "inference", ov)["network_def"]
    net.load_state_dict(state)  # strict: the saved keys are the network's, no DDP/ignite wrapping
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

    # evaluation: one Dice per validation case and class, mean in [0, 1]
    run_bundle(name, "evaluate", ov)
    with open(run_root / "eval" / "metrics.csv") as f:
        ((key, mean_dice),) = [(r[0], float(r[1])) for r in csv.reader(f)]
    assert key == "val_mean_dice" and 0.0 <= mean_dice <= 1.0
    with open(run_root / "eval" / "val_mean_dice_raw.csv") as f:
        rows = list(csv.reader(f))
    n_val = len(datalist(data, "validation", None if name == "swin_x2s_spine" else spec.name))
    foreground = spec.out_channels if spec.regions else spec.out_channels - 1
    assert len(rows) == n_val + 1 and rows[0] == ["filename", *(f"class{i}" for i in range(foreground)), "mean"]
    per_case = np.array([[float(v) for v in r[1:]] for r in rows[1:]])  # classes (nan: absent from the truth), mean
    np.testing.assert_allclose(per_case[:, -1], np.nanmean(per_case[:, :-1], 1), atol=1e-4)
    assert mean_dice == pytest.approx(np.nanmean(per_case[:, -1]), abs=1e-4)  # the mean over cases of the class means

    # inference: one label map per input, on the input's grid, with the dataset's label values
    run_bundle(name, "inference", ov)
    for source, pred_file in _inputs_and_outputs(name, data, run_root / "eval"):
        pred, ref = nib.load(str(pred_file)), nib.load(str(source))
        assert pred.shape == ref.shape[:3]
        np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-4)
        assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= set(spec.labels.values())

    # TorchScript export of the trained checkpoint, loaded with plain torch, equal to the eager model
    ts = export_bundle(name, overrides=ov)
    assert ts == run_root / "models" / "model.ts"
    shape = trace_input_shape(name, ov)
    loaded = torch.jit.load(str(ts))
    x = torch.rand(*shape)
    net.eval()
    with torch.no_grad():
        expected, got = net(x), loaded(x)
    assert (
        got.shape
        == expected.shape
        == (1, spec.out_channels, *((64, 64, 64) if name == "swin_x2s_spine" else shape[2:]))
    )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)

    # ONNX export of the trained checkpoint: batch dynamic, the bundle's dataset spec inside (20 s each, so for the
    # bundles whose spec or network the other ONNX tests do not cover: BraTS regions with a sigmoid output and 4
    # channels, CSwin UNet's anisotropic strides; the mni-tissue one on the real data below)
    if name == "swin_x2s_spine":
        with pytest.raises(ValueError, match="ONNX export is for volume"):
            export_bundle_onnx(name, overrides=ov)
        return
    if name not in ("swin_unetr_brats", "cswin_unet_prostate"):
        return
    from medswin.inference.onnx_runtime import OnnxModel

    runtime = OnnxModel(export_bundle_onnx(name, overrides=ov))
    assert runtime.spec.to_dict() == spec.to_dict() and runtime.roi_size == tuple(shape[2:])
    x = torch.rand(3, *shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(runtime(x), net(x), rtol=0, atol=1e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_gpu_config_trains_under_a_one_process_gloo_group(tmp_path, monkeypatch):
    from monai.bundle import ConfigParser

    bundle_dir = resolve_bundle("swin_unetr_mni_tissue")
    parser = ConfigParser()
    parser.read_config([str(bundle_dir / "configs" / f) for f in ("train.json", "multi_gpu_train.json")])
    assert parser["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert parser["train#dataloader#sampler"] == "@train#sampler" and parser["train#dataloader#shuffle"] is False
    assert parser["imports"] == ["$import os", "$import torch", "$import torch.distributed as dist"]

    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }.items():
        monkeypatch.setenv(key, value)
    data = make_data("swin_unetr_mni_tissue", tmp_path / "data")
    ov = {
        **tiny("swin_unetr_mni_tissue"),
        "dataset_dir": str(data),
        "bundle_root": str(tmp_path / "run"),
        "max_epochs": 1,
        "epoch_length": 2,
        "val_interval": 1,
        "num_samples": 1,
    }
    run_bundle("swin_unetr_mni_tissue", "multi_gpu_train", ov)
    assert not torch.distributed.is_initialized()  # finalize destroyed the group
    state = torch.load(tmp_path / "run" / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # saved unwrapped from DDP
    create_model("swin_unetr_tiny", in_channels=1, out_channels=4).load_state_dict(state)


@pytest.mark.slow
def test_mni_bundle_predicts_the_real_demo_data_and_exports_with_plain_monai(tmp_path):
    from medswin.data.demo import build_mni_tissue

    data = build_mni_tissue(tmp_path / "data")["2mm"]
    configs = resolve_bundle("swin_unetr_mni_tissue") / "configs"
    run_root = tmp_path / "run"
    torch.manual_seed(0)  # an untrained tiny model: this checks the pipeline and the output grid, not accuracy
    net = create_model("swin_unetr_tiny", in_channels=1, out_channels=4).eval()
    torch.save(net.state_dict(), _mkdir(run_root / "models") / "model.pt")
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    monai_cli = [sys.executable, "-m", "monai.bundle"]
    infer = [
        "run",
        "--config_file",
        str(configs / "inference.json"),
        "--bundle_root",
        str(run_root),
        "--dataset_dir",
        str(data),
        "--num_workers",
        "0",
    ]
    proc = subprocess.run(monai_cli + infer, check=False, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    source = data / "imagesTs" / "mni_superior.nii.gz"
    pred, ref = nib.load(str(run_root / "eval" / "mni_superior_seg.nii.gz")), nib.load(str(source))
    assert pred.shape == ref.shape == (99, 117, 38)
    np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-5)
    values = np.asarray(pred.dataobj)
    assert values.dtype == np.uint8 and set(np.unique(values).tolist()) <= {0, 1, 2, 3}

    # the documented plain-MONAI export (the function behind `python -m monai.bundle ckpt_export network_export ...`);
    # the TorchScript file loads in plain torch and equals the eager model
    from monai.bundle import ckpt_export

    ts = run_root / "models" / "model.ts"
    bundle_files = {
        "net_id": "network_export",
        "ckpt_file": str(ts.with_suffix(".pt")),
        "meta_file": str(configs / "metadata.json"),
        "config_file": str(configs / "inference.json"),
    }
    ckpt_export(filepath=str(ts), use_trace=True, input_shape=[1, 1, 64, 64, 32], **bundle_files)
    x = torch.rand(1, 1, 64, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts))(x), net(x), rtol=1e-4, atol=1e-4)

    # ONNX: MONAI's `python -m monai.bundle onnx_export network_export ...` (a plain graph, batch dynamic) ...
    import onnxruntime
    from monai.bundle import onnx_export

    plain = run_root / "models" / "monai.onnx"
    converter = {"input_names": ["image"], "dynamic_axes": {"image": {0: "batch"}}}
    onnx_export(filepath=str(plain), input_shape=[2, 1, 64, 64, 32], converter_kwargs=converter, **bundle_files)
    x = torch.rand(3, 1, 64, 64, 32)
    with torch.no_grad():
        got = onnxruntime.InferenceSession(str(plain)).run(None, {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, net(x).numpy(), rtol=0, atol=1e-3)
    # ... and medswin's (the dataset spec inside): `medswin predict --model model.onnx` alone gives the labels of
    # the same weights in PyTorch
    assert main(["bundle", "export", "swin_unetr_mni_tissue", "--format", "onnx",
                 "--override", f"bundle_root={run_root}"]) == 0  # fmt: skip
    onnx_file = run_root / "models" / "model.onnx"
    assert onnx_file.is_file()
    for model in ([str(onnx_file)], ["swin_unetr_tiny", "--dataset", "mni-tissue", "--weights",
                                      str(ts.with_suffix(".pt")), "--amp", "fp32"]):  # fmt: skip
        out = run_root / f"{'onnx' if model[0].endswith('.onnx') else 'torch'}_seg.nii.gz"
        assert main(["predict", "-i", str(source), "-o", str(out), "--model", *model]) == 0
    ort_labels = np.asarray(nib.load(str(run_root / "onnx_seg.nii.gz")).dataobj)
    torch_labels = np.asarray(nib.load(str(run_root / "torch_seg.nii.gz")).dataobj)
    assert ort_labels.shape == torch_labels.shape == (99, 117, 38)
    assert (ort_labels == torch_labels).mean() >= 0.999


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_lists_verifies_and_reports_bad_input(capsys, tmp_path):
    assert main(["bundle", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPECTED)
    assert main(["bundle", "verify", "swin_unetr_mni_tissue"]) == 0
    assert capsys.readouterr().out.count("ok  ") == 3
    assert main(["bundle", "run", "swin_unet_mni_tissue"]) == 2
    assert "unknown bundle 'swin_unet_mni_tissue'. Did you mean swin_unetr_mni_tissue" in capsys.readouterr().err
    assert main(["bundle", "run", "swin_unetr_mni_tissue", "--override", f"dataset_dir={tmp_path / 'nope'}"]) == 2
    assert "does not exist; point it at the data with --override dataset_dir=PATH" in capsys.readouterr().err
    assert (
        main(
            [
                "bundle",
                "run",
                "swin_unetr_mni_tissue",
                "--override",
                f"dataset_dir={tmp_path}",
                f"bundle_root={tmp_path}",
            ]
        )
        == 2
    )
    assert "no trained weights at" in capsys.readouterr().err
    assert main(["bundle", "run", "swin_unetr_mni_tissue", "--override", "dataset_dir"]) == 2
    assert "--override expects ID=VALUE" in capsys.readouterr().err
    assert main(["bundle", "export", "swin_unetr_mni_tissue", "--ckpt", str(tmp_path / "none.pt")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(["bundle", "list", "--bundles-dir", str(tmp_path / "nowhere")]) == 2
    assert "no bundles folder found" in capsys.readouterr().err


@pytest.mark.parametrize("roi,prob", [([64, 64, 32], 0.2), ([64, 32, 32], 0.0)])
def test_bundle_training_turns_patches_only_when_they_stay_stackable(tmp_path, roi, prob):
    """rot90 in the first two axes is on for a roi square there and off otherwise (a turned 64x32x32 patch would
    be 32x64x32 and the batch would not stack)."""
    data = make_data("swin_unetr_btcv", tmp_path / "data")
    ov = {**tiny("swin_unetr_btcv"), "dataset_dir": str(data), "bundle_root": str(tmp_path / "root"), "roi_size": roi}
    built = instantiate_components("swin_unetr_btcv", "train", ov)
    (rotate,) = [c for c in built.values() if type(c).__name__ == "RandRotate90d"]
    assert rotate.prob == prob
