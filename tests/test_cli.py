"""The ``medswin`` command line, in process (``main([...])``): every subcommand and its error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medswin.cli import main
from medswin.cli.demo import DEMO_RECIPES, STANDARD_MIN_STEPS, choose_recipe, demo_model_kwargs
from medswin.data.io import load_volume


def test_models_list_and_info(capsys):
    assert main(["models", "list", "swin_unetr_*"]) == 0
    out = capsys.readouterr().out
    assert "swin_unetr_tiny" in out and "swin_unetr_base" in out and "62.19M" in out
    assert main(["models", "list", "swin_unetr_tiny", "--json", "--out-channels", "14"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["size_divisor"] == 32
    assert main(["models", "info", "swin_unetr_small"]) == 0
    out = capsys.readouterr().out
    assert "size divisor: 32" in out and "use_v2" in out and "feature_size" in out


def test_unknown_model_is_one_clear_line(capsys):
    assert main(["models", "info", "swin_unetr_nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'swin_unetr_nope'" in err and "swin_unetr_tiny" in err and "Traceback" not in err


def test_train_errors(capsys, tmp_path):
    assert main(["train", "--dataset", "btcv"]) == 2
    assert "no dataset folder" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epoch: 3\n")
    assert main(["train", "--config", str(cfg), "--data", str(tmp_path)]) == 2
    assert "unknown config key(s) ['epoch']" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--dataset", "btcv"]) == 2
    assert "nowhere: dataset folder not found" in capsys.readouterr().err


def test_predict_and_evaluate_errors(capsys, tmp_path):
    assert (
        main(["predict", "-i", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "o"), "--model", "swin_unetr_tiny"])
        == 2
    )
    assert "give a checkpoint, or a model name with --dataset" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "-i",
                str(tmp_path / "x.nii.gz"),
                "-o",
                str(tmp_path / "o"),
                "--model",
                "swin_unetr_tiny",
                "--dataset",
                "btcv",
                "--roi",
                "96",
                "96",
                "96",
            ]
        )
        == 2
    )
    assert "x.nii.gz: input not found" in capsys.readouterr().err
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--dataset", "btcv"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_verbose_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError):
        main(["--verbose", "train", "--dataset", "btcv"])


@pytest.mark.slow
def test_train_predict_evaluate_round_trip(capsys, tmp_path, synth_dataset):
    data, spec_file = synth_dataset
    run = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "synth-ct",
        "--data",
        str(data),
        "--datasets",
        str(spec_file),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--iterations-per-epoch",
        "2",
        "--num-samples",
        "1",
        "--amp",
        "fp32",
        "--folds",
        "1",
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    ckpt = run / "checkpoint_last.pt"
    # a whole dataset folder in, one file per case out
    assert main(["predict", "-i", str(data), "-o", str(tmp_path / "pred"), "--model", str(ckpt), "--amp", "fp32"]) == 0
    preds = sorted((tmp_path / "pred").glob("*.nii.gz"))
    assert [p.name for p in preds] == ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    image = load_volume(data / "imagesTr" / "case_000.nii.gz")
    seg = load_volume(preds[0])
    assert seg.spatial_shape == image.spatial_shape and np.allclose(seg.affine, image.affine)
    # one file in, one file out, with mirroring and post-processing
    single = tmp_path / "single.nii.gz"
    assert (
        main(
            [
                "predict",
                "-i",
                str(data / "imagesTr" / "case_001.nii.gz"),
                "-o",
                str(single),
                "--model",
                str(ckpt),
                "--mirror",
                "--largest-component",
                "--amp",
                "fp32",
            ]
        )
        == 0
    )
    assert single.is_file()
    capsys.readouterr()
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "pred"),
                "--gt",
                str(data / "labelsTr"),
                "--dataset",
                "synth-ct",
                "--datasets",
                str(spec_file),
                "--out",
                str(out),
                "--images",
                str(data / "imagesTr"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| organ |" in printed and "| lesion |" in printed and "**mean**" in printed
    for name in ("per_case.csv", "summary.json", "summary.md", "boxplot_dice.png", "overlay_best.png"):
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_real_template(capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--budget-minutes", "0.2"]) == 0  # the probe, then one epoch
    printed = capsys.readouterr().out
    assert "| CSF |" in printed and "| GM |" in printed and "| WM |" in printed
    result = json.loads((tmp_path / "demo.json").read_text())
    assert result["steps"] >= 10
    # the recipe follows the measured step time, and the result names the machine it ran on
    assert result["probe_seconds_per_step"] > 0
    assert result["recipe"] == choose_recipe(result["probe_seconds_per_step"], 0.2 * 60)
    assert result["num_samples"] == DEMO_RECIPES[result["recipe"]]["num_samples"]
    assert result["model_kwargs"] == {"num_heads": [1, 2, 4, 8]}  # 12-channel heads (see demo.py)
    assert result["cpu"]["cpu_model"] and result["cpu"]["isa"].split(" (")[0] in (
        "AVX2",
        "AVX-512",
        "AVX-512 BF16",
        "AMX",
    )
    assert result["cpu"]["peak_fp32_gflops"] > 0
    assert f"{result['steps']} training steps" in printed and result["cpu"]["cpu_model"] in printed
    for name in ("GM", "WM"):
        assert 0.0 <= result["summary"]["per_class"][name]["dice"]["mean"] <= 1.0
    assert (tmp_path / "prediction" / "mni_superior.nii.gz").is_file()
    assert (tmp_path / "report" / "overlay_worst.png").is_file() and (tmp_path / "run" / "curves.png").is_file()


def test_the_demo_recipe_follows_the_measured_step_time():
    budget = 5 * 60
    assert choose_recipe(0.99 * budget / STANDARD_MIN_STEPS, budget) == "standard"  # 140 steps fit: 4 patches per step
    assert choose_recipe(1.01 * budget / STANDARD_MIN_STEPS, budget) == "light"
    assert choose_recipe(4.9, budget) == "light"  # the AVX2 EPYC of issue 18 before its speed-ups: 61 steps
    assert choose_recipe(2.06, budget) == "standard"  # the AVX2 emulation at one thread today: 145 steps
    assert (
        demo_model_kwargs("swin_unetr_tiny") == {"num_heads": [1, 2, 4, 8]}
        and demo_model_kwargs("cswin_unet_tiny") == {}
    )
    light, standard = DEMO_RECIPES["light"], DEMO_RECIPES["standard"]
    assert light["num_samples"] * 2 == standard["num_samples"] and light["roi_size"] == standard["roi_size"]
