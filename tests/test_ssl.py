"""Self-supervised pretraining: augmentations, losses against hand computations, token masking on every
encoder, each task learning on a tiny model, encoder weights across the registry, and ``medswin pretrain``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medswin.cli import main
from medswin.models import WeightLoadError, create_model, list_models, load_encoder_weights, model_kind
from medswin.ssl import PretrainConfig, SSLModel, build_ssl_model, parse_tasks
from medswin.ssl.augment import BOX_FRACTION, _box, cutout, cutout_batch, rotate90
from medswin.ssl.heads import ReconstructionHead, SimMIMHead, upsampling_steps
from medswin.ssl.losses import AutomaticWeightedLoss, barlow_twins_loss, simmim_loss
from medswin.ssl.masking import TokenMasker, expand_mask, random_cell_mask
from medswin.ssl.trainer import encoder_checkpoint


MODELS_3D = [name for name in list_models("*_tiny") if model_kind(name) == "volume"]


@pytest.fixture(scope="module")
def registry():
    """Tiny 3D models built once (Swin UNETR's construction alone takes ~1.5 s): ``{(name, in, out): model}``,
    every 3D tiny preset with 2 and 5 outputs, plus encoders of other configurations."""
    torch.manual_seed(0)
    keys = [(n, 1, out) for n in MODELS_3D for out in (2, 5)] + [("swin_unetr_tiny", 2, 2), ("swin_unetr_small", 1, 2)]
    return {(n, i, o): create_model(n, in_channels=i, out_channels=o) for n, i, o in keys}


def _smooth_volume(shape, seed=0) -> torch.Tensor:
    """Smooth random crops (low-frequency structure a tiny model can learn within a few steps)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(shape[0], shape[1], *(max(2, s // 8) for s in shape[2:]), generator=g)
    return torch.nn.functional.interpolate(coarse, size=shape[2:], mode="trilinear", align_corners=False)


# ------------------------------------------------------------------ augmentations


def test_rotation_labels_match_the_applied_rotation():
    x = torch.randn(16, 2, 6, 6, 5)
    g = torch.Generator().manual_seed(3)
    rotated, k = rotate90(x, generator=g)
    assert rotated.shape == x.shape and k.dtype == torch.int64 and set(k.tolist()) == {0, 1, 2, 3}
    for i in range(len(x)):  # the only quarter turn in the (X, Y) plane that reproduces the view is the label
        matches = [j for j in range(4) if torch.equal(torch.rot90(x[i], j, (1, 2)), rotated[i])]
        assert matches == [int(k[i])]
    # a single bright voxel at (X=0, Y=5): k=1 turns it from the X axis towards Y, i.e. to (X=0, Y=0)
    y = torch.zeros(1, 1, 6, 6, 1)
    y[0, 0, 0, 5, 0] = 1
    for seed in range(20):
        out, kk = rotate90(y, generator=torch.Generator().manual_seed(seed))
        if int(kk) == 1:
            assert out[0, 0, 0, 0, 0] == 1 and out.sum() == 1
            break
    else:
        pytest.fail("no k=1 draw in 20 seeds")
    with pytest.raises(ValueError, match="X == Y"):
        rotate90(torch.zeros(1, 1, 6, 5, 5))


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.2, 0.3])
def test_cutout_covers_the_requested_fraction(fraction):
    x = torch.rand(2, 40, 36, 32) * 3 - 1
    largest_box = math.prod(int(BOX_FRACTION[1] * s) for s in x.shape[1:]) / x[0].numel()
    for seed in range(3):
        out, covered, f = cutout(x, fraction=fraction, generator=torch.Generator().manual_seed(seed))
        share = covered.float().mean().item()
        assert f == fraction and fraction <= share < fraction + largest_box
        assert torch.equal(out[:, ~covered], x[:, ~covered])  # untouched outside the boxes
        assert out[:, covered].min() >= x.min() and out[:, covered].max() <= x.max()  # noise in the crop's range
        assert (out[:, covered] != x[:, covered]).float().mean() > 0.99
    source = torch.full_like(x, 7.0)  # second round: boxes pasted from another crop
    out, covered, _ = cutout(x, source=source, fraction=fraction, generator=torch.Generator().manual_seed(0))
    assert (out[:, covered] == 7.0).all() and torch.equal(out[:, ~covered], x[:, ~covered])


def test_cutout_draws_coverage_and_box_sizes_as_specified():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 40, 40, 20)
    draws = [cutout(x, generator=g)[2] for _ in range(60)]
    assert 0.0 <= min(draws) and max(draws) <= 0.3 and 0.1 < float(np.mean(draws)) < 0.2  # U(0, 0.3)
    for _ in range(200):
        box = _box((40, 40, 20), g)
        sides = [s.stop - s.start for s in box]
        assert all(max(1, int(0.05 * n)) <= side <= int(0.25 * n) for side, n in zip(sides, (40, 40, 20)))
        assert all(s.start >= 0 and s.stop <= n for s, n in zip(box, (40, 40, 20)))
    batch = torch.rand(3, 1, 16, 16, 16)
    kept = batch.clone()
    out = cutout_batch(batch, generator=torch.Generator().manual_seed(1))
    assert torch.equal(batch, kept) and out.shape == batch.shape and not torch.equal(out, batch)


# ------------------------------------------------------------------ losses


def test_nt_xent_equals_a_hand_computed_value(registry):
    ssl = SSLModel(registry["cswin_unet_tiny", 1, 2].encoder, 1, ["contrast"])
    assert ssl.contrast_loss.temperature == 0.5
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    # cosines: a1.b1 = a1.b2 = a2.b1 = 1/sqrt2, a2.b2 = -1/sqrt2, a1.a2 = b1.b2 = 0; logits = cos / 0.5
    r = math.sqrt(2)
    per_anchor = [
        -math.log(math.exp(r) / (1 + 2 * math.exp(r))),  # a1: positive b1, negatives a2 (0), b2 (r)
        -math.log(math.exp(-r) / (1 + math.exp(r) + math.exp(-r))),  # a2: positive b2 (-r), negatives a1, b1
        -math.log(math.exp(r) / (1 + 2 * math.exp(r))),  # b1: positive a1
        -math.log(math.exp(-r) / (1 + math.exp(r) + math.exp(-r))),  # b2: positive a2
    ]
    expected = sum(per_anchor) / 4
    assert expected == pytest.approx(1.95018, abs=1e-5)
    assert float(ssl.contrast_loss(z1, z2)) == pytest.approx(expected, rel=1e-6)


def test_barlow_twins_loss_zero_for_identical_decorrelated_embeddings_and_hand_value():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # standardised, uncorrelated columns
    assert float(barlow_twins_loss(z, z)) == pytest.approx(0.0, abs=1e-8)
    assert float(barlow_twins_loss(3 * z + 2, 3 * z + 2)) == pytest.approx(0.0, abs=1e-8)  # BN removes scale/shift
    z1 = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 4.0]])
    z2 = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]])
    # standardised columns: z1 -> [-a, 0, a], [-b, -b, 2b]; z2 -> [a, -a, 0], [-b, -b, 2b] (a = sqrt(3/2), b = 1/sqrt2)
    # C = [[-1/2, sqrt3/2], [0, 1]]: L = (1 + 1/2)^2 + (1 - 1)^2 + 0.0051 * (3/4 + 0)
    assert float(barlow_twins_loss(z1, z2)) == pytest.approx(2.25 + 0.0051 * 0.75, rel=1e-4)
    assert float(barlow_twins_loss(z1, z2, lambd=1.0)) == pytest.approx(2.25 + 0.75, rel=1e-4)


def _barlow_ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x1, x2, weight = torch.load(Path(out) / "inputs.pt", weights_only=True)
    proj = torch.nn.Linear(5, 4, bias=False)
    with torch.no_grad():
        proj.weight.copy_(weight)
    half = slice(rank * 4, rank * 4 + 4)  # each rank holds 4 of the 8 samples
    loss = barlow_twins_loss(proj(x1[half]), proj(x2[half]), lambd=0.3)
    loss.backward()
    grad = proj.weight.grad.clone()
    dist.all_reduce(grad)  # what DDP does: average the gradients over ranks
    torch.save((loss.detach(), grad / world), Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_barlow_twins_cross_correlation_is_all_reduced_under_ddp(tmp_path):
    import socket

    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(0)
    x1, x2, weight = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g), torch.randn(4, 5, generator=g)
    torch.save((x1, x2, weight), tmp_path / "inputs.pt")
    proj = torch.nn.Linear(5, 4, bias=False)
    with torch.no_grad():
        proj.weight.copy_(weight)
    reference = barlow_twins_loss(proj(x1), proj(x2), lambd=0.3)  # one process, the whole batch
    reference.backward()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_barlow_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        loss, grad = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert float(loss) == pytest.approx(float(reference), rel=1e-5)  # the global batch's loss on every rank
        assert torch.allclose(grad, proj.weight.grad, rtol=1e-4, atol=1e-6)  # and, after DDP averaging, its gradient
    local = barlow_twins_loss(proj(x1[:4]), proj(x2[:4]), lambd=0.3)
    assert abs(float(local) - float(reference)) > 1e-3  # a per-rank loss would have been another number


def test_simmim_loss_ignores_unmasked_voxels():
    pred = torch.zeros(1, 2, 2, 1, 1)
    target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 2, 1, 1)
    mask = torch.tensor([1.0, 0.0]).view(1, 1, 2, 1, 1)
    assert float(simmim_loss(pred, target, mask)) == pytest.approx(
        (1 + 3) / (1 * 2)
    )  # |0-1| + |0-3| over 1 voxel x 2 ch
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 2, 8, 8, 8, generator=g), torch.randn(2, 2, 8, 8, 8, generator=g)
    cells = random_cell_mask(2, (8, 8, 8), 4, 0.6, generator=g)
    voxels = expand_mask(cells, (8, 8, 8)).unsqueeze(1)
    assert cells.sum(dim=(1, 2, 3)).tolist() == [5.0, 5.0]  # ceil(0.6 * 8) cells per crop
    base = simmim_loss(pred, target, voxels)
    keep = voxels.bool().expand_as(pred)
    noise = torch.randn(pred.shape, generator=g) * 100
    assert torch.equal(simmim_loss(torch.where(keep, pred, noise), torch.where(keep, target, -noise), voxels), base)
    assert not torch.equal(simmim_loss(torch.where(keep, noise, pred), target, voxels), base)


def test_automatic_weighted_loss_formula_and_gradient():
    awl = AutomaticWeightedLoss(2)
    losses = [torch.tensor(3.0), torch.tensor(0.5)]
    total = awl(losses)
    assert float(total.detach()) == pytest.approx(0.5 * 3.0 + 0.5 * 0.5 + 2 * math.log(2))  # s = 1
    total.backward()
    # d/ds [0.5 L / s^2 + log(1 + s^2)] = -L / s^3 + 2 s / (1 + s^2) = 1 - L at s = 1
    assert awl.sigma.grad.tolist() == pytest.approx([1 - 3.0, 1 - 0.5])
    with torch.no_grad():
        awl.sigma.copy_(torch.tensor([2.0, 0.5]))
    assert float(awl(losses)) == pytest.approx(0.5 / 4 * 3.0 + math.log(5) + 0.5 / 0.25 * 0.5 + math.log(1.25))


def test_heads_shapes_and_upsampling_plan():
    assert upsampling_steps(32) == [(2, 2, 2)] * 5
    assert upsampling_steps((16, 32, 32)) == [(2, 2, 2)] * 4 + [(1, 2, 2)]
    with pytest.raises(ValueError, match="power of two"):
        upsampling_steps(24)
    feat = torch.randn(2, 192, 2, 2, 1)
    rec = ReconstructionHead(192, 1, 32)
    assert [c.out_channels for c in rec.convs] == [96, 48, 24, 12, 12]  # 16F -> 8F -> 4F -> 2F -> F -> F (F = 12)
    assert rec(feat).shape == (2, 1, 64, 64, 32)
    sim = SimMIMHead(192, 2, 32)
    assert sim.proj.out_channels == 32**3 * 2 and sim(feat).shape == (2, 2, 64, 64, 32)


def test_task_names_and_config_errors():
    assert parse_tasks("rotate, inpaint,contrast") == ["inpaint", "rotate", "contrast"]
    with pytest.raises(ValueError, match="unknown pretraining task"):
        parse_tasks("inpaint,jigsaw")
    with pytest.raises(ValueError, match="X == Y"):
        build_ssl_model("swin_unetr_tiny", 1, ["inpaint"], roi_size=(64, 96, 64))
    with pytest.raises(ValueError, match="mask cell 48 must divide"):
        build_ssl_model("swin_unetr_tiny", 1, ["simmim"], roi_size=(64, 64, 96), mask_cell=48)
    with pytest.raises(ValueError, match="3D encoders only"):
        build_ssl_model("swin_x2s_tiny", 1, ["simmim"])
    from medswin.training import ConfigError

    with pytest.raises(ConfigError, match="'tasks'"):
        PretrainConfig.from_dict({"tasks": ["rotation"]})


# ------------------------------------------------------------------ SimMIM token masking on every encoder


@pytest.mark.parametrize("name", MODELS_3D)
def test_token_masking_replaces_masked_tokens_on_every_encoder(name, registry):
    encoder = registry[name, 1, 2].encoder.eval()
    masker = TokenMasker(encoder)
    embeddings = encoder.token_embeddings()
    assert len(masker.mask_tokens) == len(embeddings) and [t.numel() for t in masker.mask_tokens] == [
        m.embed_dim for m in embeddings
    ]
    captured: list[torch.Tensor] = []
    # registered after the masker's hooks, these see the masked tokens
    handles = [m.register_forward_hook(lambda mod, inp, out: captured.append(out.detach().clone())) for m in embeddings]
    shape = (32, 32, 64)
    x = torch.randn(1, 1, *shape)
    cells = random_cell_mask(1, shape, 16, 0.6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = encoder(x)
        clean = captured[:]
        captured.clear()
        with masker.masked(cells):
            masked = encoder(x)
        after = encoder(x)  # outside the context nothing is masked
    assert len(captured) == 2 * len(embeddings)
    for tokens, ref, token in zip(captured[: len(embeddings)], clean, masker.mask_tokens):
        m = expand_mask(cells, tokens.shape[1:-1]).bool()
        assert torch.equal(tokens[m], token.detach().expand(int(m.sum()), -1))
        assert torch.equal(tokens[~m], ref[~m])
    assert not torch.equal(masked[-1], plain[-1]) and torch.equal(after[-1], plain[-1])
    if all(type(m).__name__ == "PatchEmbed" for m in embeddings):  # non-overlapping patches: masked cells are hidden
        voxels = expand_mask(cells, shape).bool()[:, None]
        y = torch.where(voxels, torch.randn_like(x) * 5, x)
        with torch.no_grad(), masker.masked(cells):
            again = encoder(y)
        assert torch.equal(again[-1], masked[-1])
    for h in handles:
        h.remove()
    masker.remove()


# ------------------------------------------------------------------ each task learns on a tiny model


TINY_DEPTHS = {"depths": [1, 1, 1, 1]}  # swin_unetr_tiny with one block per stage: the same code, half the time


@pytest.mark.slow
@pytest.mark.parametrize(
    "tasks,batch,shape",
    [
        (["inpaint", "rotate", "contrast"], 2, (32, 32, 64)),  # the reconstruction head's InstanceNorm needs > 1 voxel
        (["simmim", "barlow"], 3, (32, 32, 64)),
    ],  # Barlow's batch standardisation needs 3 or more crops
)
def test_each_task_loss_is_finite_and_decreases_on_a_fixed_batch(tasks, batch, shape):
    torch.manual_seed(0)
    ssl = build_ssl_model(
        "swin_unetr_tiny", 1, tasks, roi_size=shape, model_kwargs=TINY_DEPTHS, barlow_dims=(64, 64, 64)
    )
    x = _smooth_volume((batch, 1, *shape))
    opt = torch.optim.AdamW(ssl.parameters(), lr=2e-3, weight_decay=0.0)
    history = []
    for _ in range(5):
        torch.manual_seed(1)  # the same views, cutouts and masks at every step: a fixed batch
        losses = ssl(x)
        assert set(losses) == {*tasks, "loss"} and all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert history[0]["loss"] == pytest.approx(sum(history[0][t] for t in tasks), rel=1e-5)  # weights 1
    for t in [*tasks, "loss"]:
        assert history[-1][t] < history[0][t], (t, history)
    assert all(p.grad is not None for p in ssl.encoder.parameters())


# ------------------------------------------------------------------ encoder weights across the registry


@pytest.mark.parametrize("source", MODELS_3D)
def test_encoder_weights_load_into_every_model_sharing_the_encoder_and_nothing_else(source, registry, tmp_path):
    ssl = SSLModel(registry[source, 1, 2].encoder, 1, ["rotate"])
    saved_state = ssl.encoder_state_dict()
    ssl.encoder_state_dict = lambda: {k: v + 0.01 for k, v in saved_state.items()}  # differ from every model's init
    path = tmp_path / "encoder.pt"
    torch.save(encoder_checkpoint(ssl, source), path)
    saved = torch.load(path, weights_only=True)
    assert saved["model_name"] == source and saved["tasks"] == ["rotate"]
    assert all(k.startswith("encoder.") for k in saved["encoder"])
    target = registry[source, 1, 5]  # the same encoder under another head: every key loads
    report = load_encoder_weights(target, path)
    own = [k for k in target.state_dict() if k.startswith("encoder.")]
    assert report.missing == [] and sorted(report.loaded) == sorted(own) == sorted(saved["encoder"])
    assert all(torch.equal(target.state_dict()[k], v) for k, v in saved["encoder"].items())
    before = {k: v.clone() for k, v in registry["cswin_unet_tiny", 1, 5].state_dict().items()}
    for (name, in_channels, _), model in registry.items():
        if name != source or in_channels != 1:  # another architecture, size or input: refused, nothing loaded
            with pytest.raises(WeightLoadError, match="do not fit|wrong shape"):
                load_encoder_weights(model, path)
    assert all(torch.equal(v, registry["cswin_unet_tiny", 1, 5].state_dict()[k]) for k, v in before.items())


def test_monai_ssl_checkpoint_loads_as_encoder_weights(registry, tmp_path):
    source = registry["swin_unetr_tiny", 1, 2]
    monai_names = source.to_monai_state_dict()
    monai = {k.replace("swinViT.", "module.", 1): v for k, v in monai_names.items() if k.startswith("swinViT.")}
    monai = {k.replace(".linear1.", ".fc1.").replace(".linear2.", ".fc2."): v for k, v in monai.items()}
    monai["module.rotation_head.weight"] = torch.zeros(4, 192)  # the released file carries its SSL heads too
    path = tmp_path / "model_swinvit.pt"
    torch.save({"state_dict": monai}, path)
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=14, encoder_weights=path)  # the registry path
    report = load_encoder_weights(model, path)
    own = [k for k in model.state_dict() if k.startswith("encoder.")]
    assert (
        report.missing == [] and len(report.loaded) == len(own) and "module.rotation_head.weight" in report.unexpected
    )
    assert all(torch.equal(model.state_dict()[k], source.state_dict()[k]) for k in own)
    with pytest.raises(WeightLoadError, match="no 'encoder.' weights"):
        load_encoder_weights(registry["cswin_unet_tiny", 1, 2], path)
    with pytest.raises(FileNotFoundError):
        create_model("swin_x2s_tiny", in_channels=1, out_channels=2, encoder_weights=tmp_path / "none.pt")


# ------------------------------------------------------------------ medswin pretrain, end to end


def _write_unlabeled_folder(root: Path) -> Path:
    from medswin.data.io import write_nifti

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for i, sub in enumerate(["site_a", "site_b/deeper"]):
        vol = (_smooth_volume((1, 1, 40, 40, 70), seed=i)[0, 0].numpy() * 800 + 100).astype(np.float32)
        write_nifti(vol, affine, root / sub / f"scan{i}.nii.gz")
    write_nifti(np.zeros((40, 40, 70), np.uint8), affine, root / "labels" / "scan0.nii.gz")  # skipped
    return root


@pytest.mark.slow
def test_pretrain_cli_each_task_family_then_finetune_loads_the_encoder(tmp_path, capsys, synth_dataset):
    data = _write_unlabeled_folder(tmp_path / "scans")
    common = [
        "--model",
        "swin_unetr_tiny",
        "--model-arg",
        "depths=[1,1,1,1]",
        "--data",
        str(data),
        "--roi",
        "32",
        "32",
        "64",
        "--epochs",
        "1",
        "--iterations-per-epoch",
        "1",
        "--num-samples",
        "2",
        "--amp",
        "fp32",
    ]
    for tasks, extra in (("inpaint,rotate,contrast", ["--awl"]), ("simmim", []), ("barlow", ["--num-samples", "3"])):
        out = tmp_path / tasks.replace(",", "_")
        assert main(["pretrain", *common, "--tasks", tasks, "--out", str(out), *extra]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["steps"] == 1 and summary["encoder"] == str(out / "encoder.pt")
        ckpt = torch.load(out / "encoder.pt", weights_only=True)
        assert ckpt["model_name"] == "swin_unetr_tiny" and ckpt["tasks"] == tasks.split(",")
        report = json.loads((out / "pretrain.json").read_text())
        assert sorted(report["train_volumes"]) == ["site_a/scan0", "site_b/deeper/scan1"]  # labels/ skipped
        assert all(math.isfinite(report["final"][f"loss_{t}"]) for t in tasks.split(","))
        assert ("weight_inpaint" in report["final"]) == ("--awl" in extra)
        assert (out / "checkpoint_last.pt").is_file() and (out / "metrics.csv").is_file()

    encoder = tmp_path / "inpaint_rotate_contrast" / "encoder.pt"
    synth, spec_file = synth_dataset
    run = tmp_path / "finetune"
    assert (
        main(
            [
                "train",
                "--dataset",
                "synth-ct",
                "--data",
                str(synth),
                "--datasets",
                str(spec_file),
                "--model",
                "swin_unetr_tiny",
                "--model-arg",
                "depths=[1,1,1,1]",
                "--out",
                str(run),
                "--epochs",
                "1",
                "--iterations-per-epoch",
                "1",
                "--num-samples",
                "1",
                "--amp",
                "fp32",
                "--val-every",
                "0",
                "--roi",
                "64",
                "64",
                "32",
                "--folds",
                "1",
                "--encoder-weights",
                str(encoder),
            ]
        )
        == 0
    )
    capsys.readouterr()
    tuned = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert tuned["config"]["encoder_weights"] == str(encoder)
    fresh = create_model("swin_unetr_tiny", in_channels=1, out_channels=3, **TINY_DEPTHS)
    loaded = create_model("swin_unetr_tiny", in_channels=1, out_channels=3, encoder_weights=encoder, **TINY_DEPTHS)
    pretrained = torch.load(encoder, weights_only=True)["encoder"]
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in pretrained.items())
    assert not all(torch.equal(fresh.state_dict()[k], v) for k, v in pretrained.items())
    with pytest.raises(SystemExit):
        main(["pretrain", "--tasks"])
    assert main(["pretrain", *common, "--tasks", "jigsaw", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown pretraining task" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--dataset",
                "synth-ct",
                "--data",
                str(synth),
                "--datasets",
                str(spec_file),
                "--model",
                "cswin_unet_tiny",
                "--out",
                str(tmp_path / "bad2"),
                "--encoder-weights",
                str(encoder),
            ]
        )
        != 0
    )
    assert "do not fit" in capsys.readouterr().err


@pytest.mark.slow
def test_pretraining_resumes_exactly(tmp_path):
    from medswin.ssl import PretrainTrainer

    data = _write_unlabeled_folder(tmp_path / "scans")
    cfg = dict(
        model="swin_unetr_tiny",
        model_kwargs=TINY_DEPTHS,
        data=str(data),
        roi_size=[32, 32, 64],
        iterations_per_epoch=1,
        num_samples=2,
        amp="fp32",
        tasks=["simmim"],
        seed=3,
    )
    full = PretrainTrainer(PretrainConfig.from_dict({**cfg, "epochs": 2, "out": str(tmp_path / "full")}))
    full.fit()

    class Killed(Exception):
        pass

    def die(history, row):  # the process dies right after epoch 1's checkpoint was written
        raise Killed

    part = PretrainTrainer(PretrainConfig.from_dict({**cfg, "epochs": 2, "out": str(tmp_path / "part")}))
    part.log.write = die
    with pytest.raises(Killed):
        part.fit()
    assert torch.load(tmp_path / "part" / "checkpoint_last.pt", weights_only=True)["epoch"] == 1
    again = PretrainTrainer(PretrainConfig.from_dict({**cfg, "epochs": 2, "out": str(tmp_path / "part")}))
    again.fit(resume=True)
    # the augmentation and mask RNGs are restored (else later steps would see other crops and masks).  (Two identical
    # runs in one process already differ in the last bits; bit-exactness across processes is the SIGKILL test's.)
    assert [r["train_loss"] for r in again.history] == pytest.approx([r["train_loss"] for r in full.history], rel=1e-5)
    a, b = (torch.load(tmp_path / run / "encoder.pt", weights_only=True) for run in ("full", "part"))
    assert a["steps"] == b["steps"] == 2
    assert all(torch.allclose(a["encoder"][k], b["encoder"][k], atol=1e-5) for k in a["encoder"])
