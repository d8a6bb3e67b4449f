"""ONNX export (dynamic batch, dataset spec in the metadata) and prediction through ONNX Runtime."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import onnx
import pytest
import torch

from medswin.checkpoint import save_checkpoint
from medswin.cli import main
from medswin.data.spec import get_dataset_spec
from medswin.inference import Predictor
from medswin.inference.onnx_export import METADATA_KEYS, ONNX_OPSET, export_onnx
from medswin.inference.onnx_runtime import OnnxModel
from medswin.models import create_model, list_models, model_kind

VOLUME_TINY = [n for n in list_models("*_tiny") if model_kind(n) == "volume"]
ROI = (64, 64, 32)


@pytest.fixture(scope="module")
def spec(synth_dataset):
    _, spec_file = synth_dataset
    return get_dataset_spec("synth-ct", [spec_file])


@pytest.fixture(scope="module")
def exported(synth_dataset, spec, tmp_path_factory):
    """A checkpoint of an untrained swin_unetr_tiny for synth-ct and its ONNX file written by the CLI."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=spec.out_channels)
    ckpt = save_checkpoint(
        {
            "model": model.state_dict(),
            "model_name": "swin_unetr_tiny",
            "model_kwargs": {},
            "in_channels": 1,
            "out_channels": spec.out_channels,
            "roi_size": list(ROI),
            "spec": spec.to_dict(),
        },
        root / "checkpoint_best.pt",
    )
    assert main(["export", str(ckpt), "-o", str(root / "model.onnx")]) == 0
    return ckpt, root / "model.onnx"


@pytest.mark.slow
@pytest.mark.parametrize("name", VOLUME_TINY)
def test_every_volume_model_exports_with_a_dynamic_batch_and_its_spec(name, spec, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, out_channels=spec.out_channels).eval()
    done = export_onnx(model, spec, ROI, tmp_path / "m.onnx", model_name=name)
    assert done.max_abs_diff is not None and done.max_abs_diff < 1e-3 and done.opset == ONNX_OPSET
    proto = onnx.load(str(done.path))
    assert [(o.domain, o.version) for o in proto.opset_import if o.domain == ""] == [("", ONNX_OPSET)]
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, *ROI]  # batch symbolic, the rest fixed
    meta = {p.key: p.value for p in proto.metadata_props}
    assert set(meta) == set(METADATA_KEYS)  # every documented key, and only those
    assert json.loads(meta["medswin.spec"]) == spec.to_dict()
    assert json.loads(meta["medswin.roi_size"]) == list(ROI) and meta["medswin.model_name"] == name
    assert json.loads(meta["medswin.input"])["shape"] == ["batch", 1, *ROI]
    assert json.loads(meta["medswin.output"]) == {
        "name": "logits",
        "shape": ["batch", 3, *ROI],
        "dtype": "float32",
        "activation": "softmax",
    }
    assert json.loads(meta["medswin.labels"]) == spec.labels
    assert json.loads(meta["medswin.target_spacing"]) == list(spec.target_spacing)
    assert json.loads(meta["medswin.normalization"]) == spec.normalization

    runtime = OnnxModel(done.path)
    assert (
        runtime.spec.to_dict() == spec.to_dict()
        and runtime.roi_size == ROI
        and (runtime.in_channels, runtime.out_channels) == (1, 3)
    )
    for batch in (1, 3):  # exported at batch 2: the batch axis is dynamic
        x = torch.randn(batch, 1, *ROI)
        with torch.no_grad():
            expected = model(x)
        got = runtime(x)
        assert got.shape == expected.shape == (batch, 3, *ROI)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)
        assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.999


def test_biplanar_models_are_not_exported(spec, tmp_path):
    with torch.device("meta"):
        model = create_model("swin_x2s_tiny", in_channels=1, out_channels=3)
    with pytest.raises(ValueError, match="takes two X-ray views: ONNX export is for volume models"):
        export_onnx(model, spec, ROI, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_predict_with_the_onnx_file_reproduces_the_pytorch_labels_and_logits(exported, synth_dataset, tmp_path, capsys):
    ckpt, onnx_file = exported
    data, _ = synth_dataset
    cases = sorted((data / "imagesTr").glob("*.nii.gz"))
    # a folder of cases from the CLI, 3 windows per ONNX Runtime call (the dynamic batch), and the PyTorch run
    assert main(["predict", "-i", str(data / "imagesTr"), "-o", str(tmp_path / "ort"), "--model", str(onnx_file),
                 "--sw-batch-size", "3"]) == 0  # fmt: skip
    assert main(["predict", "-i", str(data / "imagesTr"), "-o", str(tmp_path / "pt"), "--model", str(ckpt),
                 "--amp", "fp32"]) == 0  # fmt: skip
    for case in cases:
        ort_img, pt_img = nib.load(str(tmp_path / "ort" / case.name)), nib.load(str(tmp_path / "pt" / case.name))
        ort_labels, pt_labels = np.asarray(ort_img.dataobj), np.asarray(pt_img.dataobj)
        assert ort_labels.shape == pt_labels.shape == nib.load(str(case)).shape
        np.testing.assert_allclose(ort_img.affine, pt_img.affine)
        assert (ort_labels == pt_labels).mean() >= 0.999
        assert len(np.unique(pt_labels)) > 1  # not a trivial map

    # the blended sliding-window logits of a whole volume agree to 1e-3
    onnx_predictor = Predictor.from_onnx(onnx_file, sw_batch_size=2)
    torch_predictor = Predictor.from_checkpoint(ckpt, amp="fp32")
    assert (
        onnx_predictor.roi == torch_predictor.roi == ROI
        and onnx_predictor.spec.to_dict() == torch_predictor.spec.to_dict()
    )
    data_dict, _, _ = torch_predictor.load(cases[0])
    image = data_dict["image"].unsqueeze(0)
    got = onnx_predictor.engine(streaming=False).logits(onnx_predictor.runner(), image)
    expected = torch_predictor.engine(streaming=False).logits(torch_predictor.runner(), image)
    assert got.shape == expected.shape == (1, 3, *image.shape[2:])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)


def _one_line_error(capsys, argv: list[str], expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    return err


def _foreign_onnx(path):
    """A valid ONNX graph (Identity) with none of medswin's metadata."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64, 64, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 64, 64, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


@pytest.mark.slow
def test_bad_onnx_input_and_options_are_one_line_errors(exported, synth_dataset, tmp_path, capsys):
    ckpt, onnx_file = exported
    data, spec_file = synth_dataset
    case = str(sorted((data / "imagesTr").glob("*.nii.gz"))[0])
    out = str(tmp_path / "seg.nii.gz")
    predict = ["predict", "-i", case, "-o", out, "--model"]
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    _one_line_error(capsys, predict + [str(corrupt)], f"{corrupt}: not a readable ONNX model")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[:5000])
    _one_line_error(capsys, predict + [str(truncated)], f"{truncated}: not a readable ONNX model")
    _one_line_error(capsys, predict + [str(tmp_path / "none.onnx")], "none.onnx: ONNX model not found")
    foreign = _foreign_onnx(tmp_path / "foreign.onnx")
    _one_line_error(capsys, predict + [str(foreign)], f"{foreign}: an ONNX model without medswin's metadata")
    onnx_arg = predict + [str(onnx_file)]
    _one_line_error(capsys, onnx_arg + ["--roi", "64", "64", "64"], "was built for inputs of (64, 64, 32)")
    _one_line_error(capsys, onnx_arg + ["--adapt", "tent"], "--adapt tent updates PyTorch weights")
    _one_line_error(capsys, onnx_arg + ["--amp", "bf16"], "runs in float32 (its exported precision), not --amp bf16")
    _one_line_error(capsys, onnx_arg + ["--compile"], "an ONNX model runs in ONNX Runtime")
    _one_line_error(capsys, onnx_arg + ["--dataset", "synth-ct", "--datasets", str(spec_file)], "--dataset does not go")
    _one_line_error(capsys, onnx_arg + ["--weights", str(ckpt)], "--weights does not go with an ONNX model")
    assert not (tmp_path / "seg.nii.gz").exists()
    # export: the file name, a checkpoint that is not one, a roi the model cannot take
    _one_line_error(capsys, ["export", str(ckpt), "-o", str(tmp_path / "m.pt")], "name must end in .onnx")
    _one_line_error(capsys, ["export", str(corrupt), "-o", str(tmp_path / "m.onnx")], str(corrupt))
    _one_line_error(capsys, ["export", str(ckpt), "-o", str(tmp_path / "m.onnx"), "--roi", "50", "64", "32"],
                    "is not a multiple of 32")  # fmt: skip
    _one_line_error(capsys, ["export", str(ckpt), "-o", str(tmp_path / "m.onnx"), "--opset", "9"], "opsets 18 to 23")
    assert not (tmp_path / "m.onnx").exists()
