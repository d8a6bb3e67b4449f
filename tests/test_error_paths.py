"""Every raise site of the training config and trainer, inference, evaluation metrics, checkpoints, device and
precision, the model registry and weights, adaptation and the CLI, triggered on purpose with its message checked.

A user error goes through the CLI in process (``main([...])``: exit 2, one line on stderr, no traceback); an error
only a programmer can make (an argument of the Python API) through the function that raises it.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
import torch
from torch import nn

from medswin.checkpoint import load_checkpoint, model_from_checkpoint
from medswin.cli import main
from medswin.data import DataError
from medswin.data.io import write_nifti
from medswin.data.spec import parse_spec
from medswin.models import create_model

CT5N = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
TINY = ["--model", "swin_unetr_tiny", "--dataset", "btcv", "--roi", "64", "64", "32", "--amp", "fp32"]
SPEC_KEYS = {
    "description": "test entry",
    "channel_names": ["CT"],
    "labels": {"background": 0, "organ": 1, "lesion": 2},
    "file_ending": ".nii.gz",
    "layout": "flat",
    "roi_size": [64, 64, 32],
    "licence": "-",
    "source": "-",
}
BIPLANAR_KEYS = {
    **SPEC_KEYS,
    "task": "biplanar",
    "channel_names": ["DRR"],
    "labels": {"background": 0, "bone": 1},
    "layout": "biplanar",
    "normalization": {"type": "none"},
    "roi_size": [64, 64, 64],
}


def _error_line(capsys) -> str:
    """The one error line of a failed command (log lines of the logging module are allowed besides)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line and not line.startswith(("INFO ", "WARNING ", "DEBUG "))]
    assert len(lines) == 1, err
    return lines[0]


def _fails(capsys, args: list[str], *fragments: str) -> str:
    """Run ``args``: exit code 2 (returned, or argparse's exit) and one stderr line holding every fragment."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    line = _error_line(capsys)
    assert line.startswith(f"medswin {args[0]}: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture(scope="module")
def spec():
    return parse_spec("synth-ct", dict(SPEC_KEYS))


@pytest.fixture(scope="module")
def tiny():
    """An untrained swin_unetr_tiny for the synth-ct labels (3 classes)."""
    return create_model("swin_unetr_tiny", in_channels=1, out_channels=3)


def _checkpoint(path: Path, model: nn.Module, model_name: str, spec, **changes) -> Path:
    """A training checkpoint as the trainer writes it (the run info and the weights), with ``changes``."""
    ckpt = {
        "model": model.state_dict(),
        "model_name": model_name,
        "model_kwargs": {},
        "in_channels": spec.num_channels,
        "out_channels": spec.out_channels,
        "roi_size": list(spec.roi_size),
        "spec": spec.to_dict(),
        **changes,
    }
    torch.save(ckpt, path)
    return path


# ---------------------------------------------------------------------------------------------
# training configuration (medswin train)
# ---------------------------------------------------------------------------------------------

TRAIN = ["train", "--dataset", "synth-ct", "--data", "unused"]


@pytest.mark.parametrize(
    "flags,config,fragment",
    [
        ([], {"layout": "zip"}, "config key 'layout' must be one of decathlon, nnunet"),
        (["--epochs", "0"], None, "config key 'epochs' must be a positive integer, got 0"),
        (["--num-samples", "-1"], None, "config key 'num_samples' must be a positive integer, got -1"),
        (["--iterations-per-epoch", "0"], None, "config key 'iterations_per_epoch' must be >= 1, got 0"),
        ([], {"roi_size": [64, 64]}, "config key 'roi_size' needs 3 values, got [64, 64]"),
        ([], {"amp": "fp8"}, "config key 'amp' must be auto, bf16, fp16 or fp32, got 'fp8'"),
        (["--budget-minutes", "0"], None, "config key 'budget_minutes' must be positive, got 0.0"),
        ([], {"val_overlap": 1.0}, "config key 'val_overlap' must be in [0, 1), got 1.0"),
        (["--model-arg", "feature_size"], None, "--model-arg expects KEY=VALUE, got 'feature_size'"),
    ],
)
def test_train_refuses_bad_config_values(capsys, tmp_path, flags, config, fragment):
    args = [*TRAIN, "--out", tmp_path / "run", *flags]
    if config is not None:
        (tmp_path / "run.yaml").write_text(json.dumps(config))
        args += ["--config", tmp_path / "run.yaml"]
    _fails(capsys, args, fragment)
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_config_file_it_cannot_use(capsys, tmp_path):
    _fails(capsys, [*TRAIN, "--config", tmp_path / "nope.yaml"], "nope.yaml: cannot read the config (")
    listed = tmp_path / "list.yaml"
    listed.write_text("- epochs: 3\n")
    _fails(capsys, [*TRAIN, "--config", listed], "list.yaml: the config must be a mapping of keys to values")


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------


def _decathlon(root: Path, meta: dict) -> Path:
    """A Decathlon-layout folder with one image and the given dataset.json."""
    write_nifti(np.zeros((8, 8, 8), np.float32), np.eye(4), root / "imagesTr" / "a.nii.gz")
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_train_refuses_data_without_labelled_training_cases(capsys, tmp_path, synth_dataset):
    spec_file = synth_dataset[1]
    only_test = _decathlon(tmp_path / "test-only", {"training": [], "test": ["imagesTr/a.nii.gz"]})
    args = ["train", "--dataset", "synth-ct", "--datasets", spec_file, "--out", tmp_path / "run"]
    _fails(capsys, [*args, "--data", only_test], f"{only_test}: no training cases")
    unlabelled = _decathlon(tmp_path / "unlabelled", {"training": [{"image": "imagesTr/a.nii.gz"}]})
    _fails(capsys, [*args, "--data", unlabelled], f"{unlabelled}: training case(s) without a label file: a")


def test_train_refuses_unknown_validation_cases(capsys, tmp_path, synth_dataset):
    data, spec_file = synth_dataset
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"val_cases": ["case_999"]}))
    args = ["train", "--dataset", "synth-ct", "--datasets", spec_file, "--data", data, "--out", tmp_path / "run"]
    _fails(capsys, [*args, "--config", config], "val_cases ['case_999'] are not training cases of")


def test_trainer_needs_a_dataset_name(tmp_path):
    from medswin.training import TrainConfig, Trainer

    with pytest.raises(ValueError, match=r"no dataset: pass --dataset NAME \(see medswin data datasets"):
        Trainer(TrainConfig(data=str(tmp_path), out=str(tmp_path / "run")))


def test_train_resume_refuses_a_checkpoint_of_another_model(capsys, tmp_path, synth_dataset, spec, tiny):
    data, spec_file = synth_dataset
    run = tmp_path / "run"
    run.mkdir()
    _checkpoint(run / "checkpoint_last.pt", tiny, "swin_unetr_small", spec)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"cache": False}))
    args = ["train", "--dataset", "synth-ct", "--datasets", spec_file, "--data", data, "--out", run]
    _fails(
        capsys,
        [*args, "--config", config, "--roi", 64, 64, 32, "--resume"],
        "checkpoint is a swin_unetr_small run, this run trains swin_unetr_tiny",
    )


# ---------------------------------------------------------------------------------------------
# checkpoints: through medswin predict --model FILE, and medswin.checkpoint itself
# ---------------------------------------------------------------------------------------------


class _Anything:
    """A Python object pickled into a checkpoint (weights_only loading must refuse it)."""


def _bad_checkpoint(kind: str, tmp_path: Path, spec, tiny) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "truncated":
        _checkpoint(path, tiny, "swin_unetr_tiny", spec)
        path.write_bytes(path.read_bytes()[:4096])
    elif kind == "foreign-zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", "not a torch archive")
    elif kind in ("object", "memory"):
        torch.save({"model": {}, "model_name": "x", "x": _Anything()} if kind == "object" else {}, path)
    elif kind == "state-dict":
        torch.save(tiny.state_dict(), path)
    elif kind == "pretraining":
        torch.save(
            {"model": {}, "model_name": "swin_unetr_tiny", "spec": None, "in_channels": 1, "tasks": ["rotation"]}, path
        )
    elif kind == "unbuildable":
        _checkpoint(path, tiny, "swin_unetr_tiny", spec, model_kwargs={"no_such_option": 1})
    elif kind == "misfit":
        two = create_model("swin_unetr_tiny", in_channels=1, out_channels=2)
        _checkpoint(path, two, "swin_unetr_tiny", spec)
    return path


CHECKPOINT_ERRORS = {
    "folder": "is a folder, not a checkpoint file",
    "empty": "empty checkpoint file (0 bytes)",
    "truncated": "truncated or corrupt checkpoint file (",
    "foreign-zip": "cannot read the checkpoint (RuntimeError:",
    "object": "refused: the checkpoint holds Python objects beyond tensors and plain types (it needs ",
    "memory": "not enough memory to read the checkpoint",
    "state-dict": "not a medswin training checkpoint (no 'model', 'model_name')",
    "pretraining": "a pretraining checkpoint (an encoder, no segmentation head): fine-tune it first",
    "unbuildable": "the checkpoint's model cannot be rebuilt (",
    "misfit": "its weights do not fit swin_unetr_tiny: size mismatch for decoder.",
}


@pytest.mark.parametrize("kind", list(CHECKPOINT_ERRORS))
def test_a_bad_checkpoint_is_one_line_in_predict_and_a_data_error(capsys, tmp_path, monkeypatch, spec, tiny, kind):
    path = _bad_checkpoint(kind, tmp_path, spec, tiny)
    if kind == "memory":
        monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    out = tmp_path / "seg.nii.gz"
    line = _fails(
        capsys, ["predict", "-i", tmp_path / "scan.nii.gz", "-o", out, "--model", path], CHECKPOINT_ERRORS[kind]
    )
    assert not out.exists()
    if kind == "object":  # the class it would have to import, and the way out
        assert "_Anything), which could run code when loaded; re-save it with tensors and plain types only" in line
    assert line.startswith(f"medswin predict: error: {path}: "), line  # the file, also when rebuilt from the dict
    with pytest.raises(DataError, match="^" + str(path)) as raised:
        model_from_checkpoint(load_checkpoint(path), path)
    assert CHECKPOINT_ERRORS[kind] in str(raised.value)


def test_a_missing_checkpoint(capsys, tmp_path):
    missing = tmp_path / "run" / "checkpoint_best.pt"
    _fails(capsys, ["predict", "-i", tmp_path / "a.nii.gz", "-o", tmp_path / "o", "--model", missing], "not found")
    with pytest.raises(DataError, match=f"^{missing}: checkpoint not found$"):
        load_checkpoint(missing)


# ---------------------------------------------------------------------------------------------
# medswin predict: options that do not go together
# ---------------------------------------------------------------------------------------------


def test_predict_refuses_options_that_do_not_go_together(capsys, tmp_path, spec, tiny):
    scan = write_nifti(np.zeros((20, 18, 12), np.float32), np.eye(4), tmp_path / "scan.nii.gz")
    io = ["predict", "-i", scan, "-o", tmp_path / "seg.nii.gz"]
    _fails(capsys, [*io, *TINY, "--adapt", "tent", "--entropy-filter", "0.4"], "--entropy-filter is an etta option")
    ckpt = _checkpoint(tmp_path / "run.pt", tiny, "swin_unetr_tiny", spec)
    _fails(capsys, [*io, "--model", ckpt, "--weights", ckpt], "--weights goes with a model name; a checkpoint carries")
    _fails(capsys, [*io, *TINY, "-i2", scan], "-i2 is the second X-ray view of biplanar models; swin_unetr_tiny takes")
    _fails(capsys, [*io, "--model", "swin_x2s_tiny"], "biplanar prediction needs a trained Swin-X2S checkpoint")
    x2s = tmp_path / "x2s.pt"
    torch.save({"model": {}, "model_name": "swin_x2s_tiny"}, x2s)
    _fails(capsys, [*io, "--model", x2s], "a biplanar model needs both views: -i CORONAL -i2 SAGITTAL")
    assert not (tmp_path / "seg.nii.gz").exists()


def test_predict_refuses_a_file_output_for_several_cases(capsys, tmp_path):
    cases = tmp_path / "cases"
    for name in ("a.nii.gz", "b.nii.gz"):
        write_nifti(np.zeros((20, 18, 12), np.float32), np.eye(4), cases / name)
    out = tmp_path / "seg.nii.gz"
    _fails(capsys, ["predict", "-i", cases, "-o", out, *TINY], "holds 2 cases: give an output folder, not a file")
    assert not out.exists()


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--overlap", "1"], "overlap must be in [0, 1), got 1.0"),
        (
            ["--sw-batch-size", "0"],
            "argument --sw-batch-size: expected a positive number of windows or 'auto', got '0'",
        ),
        (["--device", "mps"], "device 'mps' is not supported by medswin: use auto, cpu, cuda or cuda:N"),
        (["--adapt", "tent", "--adapt-steps", "0"], "steps must be >= 1, got 0"),
        (["--adapt", "etta", "--adapt-lr", "0"], "lr must be > 0, got 0.0"),
        (["--adapt", "tent", "--adapt-patches", "0"], "max_patches must be >= 1 (or None for every window), got 0"),
        (
            ["--adapt", "etta", "--entropy-filter", "1.5"],
            "entropy_filter must be in (0, 1] (a fraction of ln C), got 1.5",
        ),
    ],
)
def test_predict_refuses_bad_engine_device_and_adaptation_values(capsys, tmp_path, flags, fragment):
    out = tmp_path / "seg.nii.gz"
    _fails(capsys, ["predict", "-i", tmp_path / "scan.nii.gz", "-o", out, *TINY, *flags], fragment)
    assert not out.exists()


def test_predict_on_a_gpu_index_that_is_not_there(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    args = ["predict", "-i", tmp_path / "scan.nii.gz", "-o", tmp_path / "seg.nii.gz", *TINY, "--device", "cuda:3"]
    _fails(capsys, args, "device 'cuda:3': only 1 CUDA device(s) are visible")


def test_predict_refuses_an_image_that_normalises_to_nan(capsys, tmp_path):
    """Finite voxels near the float32 limit overflow the z-score normalisation: refused, not predicted."""
    (tmp_path / "datasets.yaml").write_text(json.dumps({"zscore": SPEC_KEYS}))  # no normalization: z-score
    huge = np.full((20, 18, 12), 3e38, np.float32)
    huge[0] = -3e38
    scan = write_nifti(huge, np.eye(4), tmp_path / "huge.nii.gz")
    out = tmp_path / "seg.nii.gz"
    args = ["predict", "-i", scan, "-o", out, "--model", "swin_unetr_tiny", "--amp", "fp32", "--dataset", "zscore"]
    _fails(capsys, [*args, "--datasets", tmp_path / "datasets.yaml"], f"{scan}: image contains NaN/inf voxels after")
    assert not out.exists()


def test_biplanar_views_of_the_wrong_size(capsys, tmp_path):
    spec = parse_spec("bp", dict(BIPLANAR_KEYS))
    model = create_model("swin_x2s_tiny", in_channels=1, out_channels=spec.out_channels)
    ckpt = _checkpoint(tmp_path / "x2s.pt", model, "swin_x2s_tiny", spec)
    views = []
    for name in ("coronal", "sagittal"):
        views.append(tmp_path / f"case_{name}.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), np.eye(4)), views[-1])
    out = tmp_path / "labels.nii.gz"
    args = ["predict", "--model", ckpt, "-i", views[0], "-i2", views[1], "-o", out, "--amp", "fp32"]
    _fails(capsys, args, f"{views[0]}: coronal view: ", "(32, 32)")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# other subcommands
# ---------------------------------------------------------------------------------------------


def test_models_list_without_a_match(capsys):
    _fails(capsys, ["models", "list", "unet_*"], "no model matches 'unet_*'; try 'medswin models list'")


def test_pretrain_needs_data(capsys, tmp_path):
    _fails(capsys, ["pretrain", "--out", tmp_path / "run"], "no data: pass --data FOLDER_OR_DATALIST")


def test_evaluate_refuses_a_case_with_two_files(capsys, tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    labels = np.zeros((8, 8, 8), np.uint8)
    for folder, ending in ((pred, ".nii"), (pred, ".nii.gz"), (gt, ".nii.gz")):
        write_nifti(labels, np.eye(4), folder / f"case_001{ending}")
    _fails(
        capsys,
        ["evaluate", "--pred", pred, "--gt", gt, "--dataset", "btcv", "--out", tmp_path / "report"],
        f"{pred}: case 'case_001' has two files, case_001.nii and case_001.nii.gz; keep one",
    )
    assert not (tmp_path / "report").exists()


def test_weights_files_that_hold_no_weights(capsys, tmp_path, tiny):
    from medswin.models import WeightLoadError, load_encoder_weights, load_weights

    missing = tmp_path / "missing.pt"
    args = ["predict", "-i", tmp_path / "a.nii.gz", "-o", tmp_path / "seg.nii.gz", *TINY, "--weights", missing]
    _fails(capsys, args, f"{missing}: weights file not found")
    no_tensors = tmp_path / "no_tensors.pt"
    torch.save({"epoch": 3, "note": "no tensors"}, no_tensors)
    with pytest.raises(WeightLoadError, match=f"^{no_tensors}: no state dict found"):
        load_weights(tiny, no_tensors)
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    with pytest.raises(WeightLoadError, match=f"^{text}: cannot read checkpoint"):
        load_encoder_weights(tiny, text)


# ---------------------------------------------------------------------------------------------
# the Python API: arguments only a programmer passes
# ---------------------------------------------------------------------------------------------


def test_lazy_packages_name_what_they_lack():
    import medswin.adaptation
    import medswin.inference

    with pytest.raises(AttributeError, match="module 'medswin.inference' has no attribute 'Predicter'"):
        medswin.inference.Predicter  # noqa: B018
    with pytest.raises(AttributeError, match="module 'medswin.adaptation' has no attribute 'Tant'"):
        medswin.adaptation.Tant  # noqa: B018


def test_predictor_arguments(spec, tiny):
    from medswin.inference import BiplanarPredictor, Predictor

    x2s = create_model("swin_x2s_tiny", in_channels=1, out_channels=2)
    with pytest.raises(ValueError, match="SwinX2S takes two X-ray views: use BiplanarPredictor"):
        Predictor(x2s, spec)
    with pytest.raises(ValueError, match="SwinUNETR does not take two X-ray views: use Predictor"):
        BiplanarPredictor(tiny, spec)
    no_roi = parse_spec("no-roi", {k: v for k, v in SPEC_KEYS.items() if k != "roi_size"})
    with pytest.raises(ValueError, match=r"dataset 'no-roi' sets no roi_size: give the sliding-window size"):
        Predictor(tiny, no_roi)
    with pytest.raises(ValueError, match=r"roi_size \(64, 64\) does not fit SwinUNETR: .* takes 3 spatial axes"):
        Predictor(tiny, spec, roi_size=(64, 64))
    two_in = create_model("swin_unetr_tiny", in_channels=2, out_channels=3)
    with pytest.raises(ValueError, match=r"the model takes 2 channel\(s\), dataset 'synth-ct' has 1"):
        Predictor(two_in, spec)
    two_out = create_model("swin_unetr_tiny", in_channels=1, out_channels=2)
    with pytest.raises(ValueError, match=r"the model predicts 2 channel\(s\), dataset 'synth-ct' needs 3"):
        Predictor(two_out, spec)


def test_sliding_window_arguments():
    from medswin.inference.sliding_window import Slab, SlidingWindow, window_plan

    with pytest.raises(ValueError, match=r"roi_size \(32, 32\) has 2 axes but the volume has 3 spatial axes"):
        window_plan((64, 64, 32), (32, 32), 0.5)
    with pytest.raises(ValueError, match=r"roi_size must be positive, got \(0, 32, 32\)"):
        window_plan((64, 64, 32), (0, 32, 32), 0.5)
    with pytest.raises(ValueError, match=r"overlap must be in \[0, 1\), got 1.0"):
        window_plan((64, 64, 32), (32, 32, 32), 1.0)
    slab = Slab(0, slice(0, 4), torch.zeros(2, 8, 8, 4), None)
    with pytest.raises(ValueError, match=r"without the summed weights; ask iter_slabs\(\.\.\., need_count=True\)"):
        slab.logits()
    with pytest.raises(ValueError, match="image must be a floating-point tensor, got torch.int64"):
        SlidingWindow((8, 8, 8)).probabilities(lambda x: x, torch.zeros(1, 1, 8, 8, 8, dtype=torch.int64))


def test_writers_and_post_processing(tmp_path, spec):
    from medswin.inference.postprocess import region_label_values
    from medswin.inference.predictor import Prediction
    from medswin.inference.writers import output_format, write_dicom_seg_prediction

    with pytest.raises(ValueError, match="unknown output format 'png'; use nifti or dicom-seg"):
        output_format("png")
    empty = Prediction(np.zeros((16, 16, 5), np.int16), np.eye(4), str(CT5N))
    with pytest.raises(DataError, match="the prediction is empty; a DICOM-SEG needs at least one segment"):
        write_dicom_seg_prediction(empty, tmp_path / "seg.dcm", spec)
    with pytest.raises(ValueError, match=r"region 'a' \[1, 2\] does not own exactly one label value \(owns \[1, 2\]\)"):
        region_label_values({"a": [1, 2], "b": [1, 2]})


def test_dicom_seg_arguments(tmp_path):
    from medswin.inference.dicom_seg import write_dicom_seg

    labels = np.zeros((16, 16, 5), np.uint8)
    labels[4:8, 4:8, 2] = 1
    with pytest.raises(ValueError, match="is a folder; give the path of the DICOM-SEG file to write"):
        write_dicom_seg(labels, CT5N, tmp_path, {1: "organ"})
    with pytest.raises(ValueError, match="label name '' of value 1 must be 1 to 64 characters"):
        write_dicom_seg(labels, CT5N, tmp_path / "seg.dcm", {1: ""})
    series = shutil.copytree(CT5N, tmp_path / "multiframe")
    first = min(series.iterdir())
    ds = pydicom.dcmread(first)
    ds.NumberOfFrames, ds.PixelData = 2, ds.PixelData * 2  # a genuine two-frame file: its pixel data is complete
    ds.save_as(first)
    with pytest.raises(ValueError, match=f"{first}: multi-frame source images are not supported"):
        write_dicom_seg(labels, series, tmp_path / "seg.dcm", {1: "organ"})
    assert not (tmp_path / "seg.dcm").exists()


def test_metrics_arguments():
    from medswin.evaluation.metrics import binary_metrics, case_metrics

    mask = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match=r"spacing must be a sequence of 3 numbers \(mm per axis\), got 1.5"):
        binary_metrics(mask, mask, spacing=1.5)
    with pytest.raises(ValueError, match=r"prediction shape \(4, 4, 4\) differs from ground-truth shape \(4, 4, 5\)"):
        case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), spacing=(1, 1, 1))


def test_precision_and_registry_arguments():
    from medswin.amp import resolve_amp
    from medswin.models import SwinUNETR
    from medswin.models._registry import register_model

    with pytest.raises(ValueError, match=r"amp must be one of \('auto', 'bf16', 'fp16', 'fp32'\), got 'fp8'"):
        resolve_amp("fp8", "cpu")
    with pytest.raises(ValueError, match=r"kind must be one of \('volume', 'biplanar'\), got 'slice'"):
        register_model(SwinUNETR, default_roi=(64, 64, 64), paper="-", kind="slice")

    def swin_unetr_tiny():
        return {}

    with pytest.raises(ValueError, match="model 'swin_unetr_tiny' is registered twice"):
        register_model(SwinUNETR, default_roi=(64, 64, 64), paper="-")(swin_unetr_tiny)
    assert isinstance(create_model("swin_unetr_tiny", in_channels=1, out_channels=2), SwinUNETR)  # still registered


def test_adapter_arguments(tiny):
    from medswin.adaptation import Etta, Tent

    norm = next(n for n, p in tiny.named_parameters() if n.startswith("encoder.") and "norm" in n)
    cases = [
        (Tent, {"optimizer": "rmsprop"}, r"optimizer must be one of \('adam', 'sgd'\), got 'rmsprop'"),
        (Etta, {"optimizer": "rmsprop"}, r"optimizer must be one of \('adam', 'sgd'\), got 'rmsprop'"),
        (Tent, {"sw_batch_size": 0}, "sw_batch_size must be >= 1, got 0"),
        (Etta, {"overlap": 1.0}, r"overlap must be in \[0, 1\), got 1.0"),
        (
            Tent,
            {"params": "every"},
            r"params must be one of \('encoder-norms', 'norms', .*\) or a list of parameter names",
        ),
        (Tent, {"params": []}, "params is an empty list: name at least one parameter of SwinUNETR"),
        (Etta, {"params": [norm, norm]}, "params lists a parameter twice"),
    ]
    for method, options, message in cases:
        with pytest.raises(ValueError, match=message):
            method(tiny, **options)
    adapter = Tent(tiny, roi_size=(64, 64, 32), amp="fp32")
    image = torch.zeros(1, 1, 64, 64, 32)
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 1, 64, 64, 32\), got \(1, 64, 64, 32\)"):
        adapter.adapt(image, torch.ones(1, 64, 64, 32, dtype=torch.bool))


def test_weights_and_checkpoints_that_are_not_torch_files_are_one_line(capsys, tmp_path):
    scan = tmp_path / "scan.nii.gz"
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n" * 10)
    _fails(
        capsys, ["predict", "-i", scan, "-o", tmp_path / "o.nii.gz", "--model", text], "not a PyTorch checkpoint file"
    )
    args = ["predict", "-i", scan, "-o", tmp_path / "o.nii.gz", "--model", "swin_unetr_tiny", "--dataset", "btcv"]
    line = _fails(capsys, [*args, "--weights", tmp_path / "missing.pt"], "weights file not found")
    assert line.startswith(f"medswin predict: error: {tmp_path / 'missing.pt'}: ")
    _fails(capsys, [*args, "--weights", text], "cannot read the weights")
