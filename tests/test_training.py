"""The trainer: configuration, schedule, learning, checkpoints, exact resume after SIGKILL, DDP."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medswin.data.spec import load_dataset_specs
from medswin.models import create_model
from medswin.training import ConfigError, TrainConfig, Trainer
from medswin.training.trainer import warmup_cosine

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, data, spec_file, **kw):
    values = dict(
        model="swin_unetr_tiny",
        dataset="synth-ct",
        data=str(data),
        out=str(tmp_path / "run"),
        datasets_files=[str(spec_file)],
        epochs=2,
        iterations_per_epoch=2,
        num_samples=1,
        lr=2e-3,
        val_every=0,
        amp="fp32",
        n_folds=3,
        seed=0,
    )
    values.update(kw)
    return TrainConfig.from_dict(values)


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="'lr' must be positive"):
        TrainConfig.from_dict({"lr": 0})
    path = tmp_path / "c.yaml"
    path.write_text("model: swin_unetr_small\nepochs: 7\n")
    cfg = TrainConfig.from_yaml(path, {"epochs": 9, "lr": None})
    assert cfg.model == "swin_unetr_small" and cfg.epochs == 9 and cfg.lr == 1e-4


def test_warmup_then_cosine():
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.5)
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.0)


@pytest.mark.slow
def test_trainer_learns_validates_and_writes_outputs(tmp_path, synth_dataset):
    data, spec_file = synth_dataset
    cfg = _config(tmp_path, data, spec_file, epochs=4, iterations_per_epoch=3, val_every=2)
    trainer = Trainer(cfg)
    assert len(trainer.train_cases) == 2 and len(trainer.val_cases) == 1  # fold 0 of 3
    summary = trainer.fit()
    losses = [row["train_loss"] for row in trainer.history]
    assert losses[-1] < losses[0]
    assert summary["steps"] == 12 and "dice_mean" in trainer.history[1] and "dice_mean" in trainer.history[3]
    assert 0.0 <= summary["best_metric"] <= 1.0
    out = Path(cfg.out)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "metrics.csv", "curves.png", "config.yaml"):
        assert (out / name).is_file(), name
    ckpt = torch.load(out / "checkpoint_last.pt", weights_only=True)  # no pickle needed
    assert ckpt["epoch"] == 4 and ckpt["model_name"] == "swin_unetr_tiny" and ckpt["spec"]["name"] == "synth-ct"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert not list(out.glob(".tmp-*"))


def _train_cmd(data, spec_file, out, extra=()):
    return [
        sys.executable,
        "-m",
        "medswin",
        "train",
        "--dataset",
        "synth-ct",
        "--data",
        str(data),
        "--datasets",
        str(spec_file),
        "--model",
        "swin_unetr_tiny",
        "--out",
        str(out),
        "--epochs",
        "3",
        "--iterations-per-epoch",
        "2",
        "--num-samples",
        "1",
        "--lr",
        "2e-3",
        "--amp",
        "fp32",
        "--val-every",
        "0",
        "--roi",
        "64",
        "32",
        "32",
        "--folds",
        "1",
        *extra,
    ]


def _losses(out: Path) -> list[float]:
    return [float(r["train_loss"]) for r in csv.DictReader((out / "metrics.csv").open())]


@pytest.mark.slow
def test_resume_after_sigkill_repeats_the_uninterrupted_run(tmp_path, synth_dataset):
    data, spec_file = synth_dataset
    # one thread: with two, an uninterrupted run itself varies in the 7th digit on a loaded 2-core EPYC (some
    # multi-threaded CPU kernel of the backward pass reduces in a scheduling-dependent order); with one, every
    # run gives the same bits, so resume is checked bit for bit
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run(_train_cmd(data, spec_file, full), check=True, env=env, capture_output=True)
    reference = _losses(full)
    assert len(reference) == 3

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(data, spec_file, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline:  # kill as soon as epoch 1's checkpoint and metrics are on disk
        if (killed / "metrics.csv").is_file() and len(_losses(killed)) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(_losses(killed))
    assert 1 <= done_before < 3, "the run finished before it could be killed"
    subprocess.run(_train_cmd(data, spec_file, killed, ["--resume"]), check=True, env=env, capture_output=True)
    resumed = _losses(killed)
    assert resumed == reference  # bit-identical losses for the epochs after the kill


def _ddp_worker(rank: int, world: int, port: int, data: str, spec_file: str, out: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    cfg = TrainConfig.from_dict(
        dict(
            model="swin_unetr_tiny",
            dataset="synth-ct",
            data=data,
            out=out,
            datasets_files=[spec_file],
            epochs=2,
            iterations_per_epoch=2,
            num_samples=1,
            lr=2e-3,
            val_every=0,
            amp="fp32",
            n_folds=1,
            device="cpu",
            roi_size=[64, 32, 32],
        )
    )
    trainer = Trainer(cfg)
    assert trainer.dist.world_size == world and trainer.dist.rank == rank
    trainer.fit()
    torch.save(trainer.model.state_dict(), Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_identical_weights(tmp_path, synth_dataset):
    import socket

    import torch.multiprocessing as mp

    data, spec_file = synth_dataset
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, port, str(data), str(spec_file), str(out)), nprocs=2, join=True)
    a = torch.load(out / "rank0.pt", weights_only=True)
    b = torch.load(out / "rank1.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (out / "checkpoint_last.pt").is_file()
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 2  # rank 0 alone wrote


def test_specs_for_training_are_self_contained(tmp_path, synth_dataset):
    from medswin.data.spec import DatasetSpec

    _, spec_file = synth_dataset
    spec = load_dataset_specs([spec_file])["synth-ct"]
    again = DatasetSpec.from_dict(spec.to_dict())
    assert again.labels == spec.labels and again.target_spacing == spec.target_spacing and again.name == "synth-ct"
    assert again.normalization == spec.normalization and again.roi_size == spec.roi_size
    brats = load_dataset_specs()["brats2023"]
    assert DatasetSpec.from_dict(brats.to_dict()).regions == brats.regions


@pytest.mark.slow
def test_validation_uses_the_engine_and_equals_the_monai_reference(tmp_path, synth_dataset):
    from monai.metrics import DiceMetric

    from medswin.inference import predict_logits

    data, spec_file = synth_dataset
    trainer = Trainer(_config(tmp_path, data, spec_file, roi_size=[64, 64, 32]))
    dice = trainer.validate()
    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)
    for case in trainer.val_cases:  # the plain MONAI path on the same preprocessed volumes
        item = trainer.val_pipeline(case)
        logits = predict_logits(trainer.model, item["image"][None], trainer.roi, amp="fp32")
        one_hot = torch.nn.functional.one_hot
        metric(one_hot(logits.argmax(1), 3).movedim(-1, 1), one_hot(item["label"][None, 0].long(), 3).movedim(-1, 1))
    expected = metric.aggregate().tolist()
    assert [dice["dice_organ"], dice["dice_lesion"]] == pytest.approx(expected, abs=1e-6)


def test_skipped_validation_says_why(tmp_path, synth_dataset, caplog):
    data, spec_file = synth_dataset  # three cases: no 5-fold split
    trainer = Trainer(_config(tmp_path, data, spec_file, n_folds=5, val_every=1, epochs=1, iterations_per_epoch=1))
    assert trainer.val_cases == []
    with caplog.at_level("WARNING", logger="medswin.training.trainer"):
        trainer.fit()
    assert (
        "validation skipped: 3 training case(s) and no validation section: a 5-fold split needs at least 5"
        in caplog.text
    )


def test_the_probe_times_the_trainers_step_and_the_step_learns():
    from medswin.data.spec import get_dataset_spec
    from medswin.training.losses import make_loss
    from medswin.training.probe import time_training_step, training_step

    spec = get_dataset_spec("mni-tissue")
    assert time_training_step(spec, "swin_unetr_tiny", (64, 32, 32), 1, "fp32", steps=1) > 0
    torch.manual_seed(0)
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=4).train()
    loss_fn = make_loss(spec, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    image, label = torch.randn(1, 1, 64, 32, 32), torch.randint(0, 4, (1, 1, 64, 32, 32))
    before = [p.detach().clone() for p in model.parameters()]
    losses = [training_step(model, loss_fn, optimizer, image, label, "fp32") for _ in range(4)]
    assert all(isinstance(v, float) for v in losses) and losses[-1] < losses[0]  # one fixed batch: it fits
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if b.grad is not None)


def test_a_step_with_non_finite_gradients_is_skipped_and_a_diverged_run_stops_with_one_clear_error(
    tmp_path, synth_dataset, caplog
):
    from medswin.training.trainer import MAX_SKIPPED_STEPS, TrainingDivergedError

    data, spec_file = synth_dataset
    trainer = Trainer(_config(tmp_path, data, spec_file, roi_size=[64, 32, 32]))
    batch = next(iter(trainer._epoch_batches(0)))
    poisoned = {**batch, "image": batch["image"].clone()}
    poisoned["image"][0, 0, 0, 0, 0] = float("nan")  # one NaN voxel: NaN loss, NaN gradients everywhere
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with caplog.at_level("WARNING", logger="medswin.training.trainer"):
        assert math.isnan(trainer.train_step(poisoned))
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())  # weights untouched
    assert trainer.skipped_steps == 1 and trainer.step == 1 and "step skipped" in caplog.text
    assert math.isfinite(trainer.train_step(batch))  # the next good step trains, and resets the count
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    for _ in range(MAX_SKIPPED_STEPS - 1):
        trainer.train_step(poisoned)
    with pytest.raises(TrainingDivergedError, match="training diverged: 10 steps in a row with non-finite gradients"):
        trainer.train_step(poisoned)
