"""Write every bundle's configs, docs and licence from one description per bundle and the dataset registry.

    python bundles/generate.py            # (re)write bundles/<name>/{configs,docs,LICENSE}
    python bundles/generate.py --check    # exit 1 if a committed file differs from what would be written

The JSON configs are what MONAI reads (``python -m monai.bundle run --config_file ...``); they are
generated so that the six bundles stay consistent with ``datasets.yaml`` (spacing, normalisation,
labels, roi) and with each other.  Edit this file, rerun it, commit the output; the test suite
fails when the two disagree.  Weights (``models/``) and outputs (``eval/``) are never committed.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import medswin
from medswin.data.spec import DatasetSpec, get_dataset_spec
from medswin.data.transforms import intensity_arguments
from medswin.models import model_info as _model_info

ROOT = Path(__file__).resolve().parent
README_TEMPLATE = ROOT / "README.template.md"  # docs/README.md of every bundle, filled in by readme()
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
VIEWS = ["image_coronal", "image_sagittal"]
# the versions the bundles were verified with (constants, so the output does not depend on the machine)
VERSIONS = {"monai": "1.6.1", "pytorch": "2.13.0", "numpy": "2.4.6"}
PACKAGES = {"nibabel": "5.4.2", "pytorch-ignite": "0.5.5", "fire": "0.7.1", "jsonschema": "4.26.0"}


@functools.cache
def _spec(name: str) -> DatasetSpec:
    return get_dataset_spec(name)


@functools.cache
def meta_model(name: str, kwargs_json: str = "{}") -> torch.nn.Module:
    """The preset built on the meta device (no weights), for its size divisor and deep-supervision weights."""
    with torch.device("meta"):
        return medswin.create_model(name, in_channels=1, out_channels=2, **json.loads(kwargs_json))


@functools.cache
def model_info(name: str) -> dict[str, Any]:
    """The registry's facts about a preset (built once, on the meta device)."""
    return _model_info(name)


@dataclass(frozen=True)
class Bundle:
    """One bundle: the model, the dataset entry and the training recipe, plus the prose of its README."""

    name: str
    title: str
    model: str
    dataset: str
    dataset_dir: str
    task: str
    data_howto: str
    published: list[str]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    roi_size: list[int] | None = None
    max_epochs: int = 300
    val_interval: int = 10
    learning_rate: float = 1e-4
    num_samples: int = 2
    biplanar: bool = False
    view_size: list[int] = field(default_factory=lambda: [128, 160])
    notes: list[str] = field(default_factory=list)
    measured_note: str = ""  # what was measured with this bundle itself (default: NOT_MEASURED)

    @property
    def spec(self) -> DatasetSpec:
        """The dataset entry (for biplanar bundles: the CT dataset the views are made from)."""
        return _spec(self.dataset)

    @property
    def tiny(self) -> str:
        """The test-sized preset of the bundle's architecture."""
        return self.model.rsplit("_", 1)[0] + "_tiny"


NOT_MEASURED = (
    "No accuracy was measured with this bundle: the data needs registration and cannot be fetched "
    "here, so the only runs were the test suite's (tiny model, synthetic data, 2 iterations)."
)

BUNDLES = [
    Bundle(
        name="swin_unetr_btcv",
        title="Swin UNETR: BTCV multi-organ CT segmentation",
        model="swin_unetr_base",
        dataset="btcv",
        dataset_dir="/workspace/data/BTCV",
        max_epochs=500,
        learning_rate=2e-4,
        task="Segmentation of 13 abdominal organs in contrast-enhanced CT (BTCV)",
        data_howto=(
            "Register at Synapse and download `RawData.zip` of *Multi-Atlas Labeling Beyond the Cranial Vault* "
            "(syn3193805). Unzip so that `dataset_dir` holds `RawData/Training/img/img00NN.nii.gz` and "
            "`RawData/Training/label/label00NN.nii.gz` (or MONAI's `dataset_0.json` next to `img/` and `label/`, "
            "whose `validation` list is then used). `medswin data check DIR --dataset btcv` reports every problem."
        ),
        published=[
            "MONAI model-zoo bundle `swin_unetr_btcv_segmentation` (F=48, roi 96^3, 1.5x1.5x2 mm, Adam 2e-4, "
            "500 epochs): mean Dice 0.82",
            "Swin UNETR BTCV README (research-contributions): base + SSL 82.25, small 79.79, tiny 72.05 mean Dice",
            "nnU-Net's comparison (Isensee et al. 2024, 5-fold CV, from scratch): SwinUNETR 78.89, SwinUNETR-V2 "
            "80.85, nnU-Net 83.08",
            "the paper's 0.918 was not reproduced by others (about 0.82 retrained; research-contributions #79, #143)",
        ],
    ),
    Bundle(
        name="swin_unetr_brats",
        title="Swin UNETR: BraTS 2021 brain tumour sub-regions",
        model="swin_unetr_base",
        dataset="brats2021",
        dataset_dir="/workspace/data/BraTS2021",
        max_epochs=300,
        val_interval=10,
        task="Segmentation of glioma sub-regions (TC, WT, ET) in multi-parametric MRI (FLAIR, T1, T1ce, T2)",
        data_howto=(
            "Register for the RSNA-ASNR-MICCAI BraTS 2021 challenge (Synapse, or the Kaggle copy of Task 1) and "
            "unpack the training data so that `dataset_dir` holds `BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,"
            "t2,seg}.nii.gz`. The network predicts the three overlapping regions (sigmoid): TC = {1, 4}, WT = "
            "{1, 2, 4}, ET = {4}; inference writes them back as one label map with the BraTS values 1/2/4."
        ),
        published=[
            "nnU-Net's comparison (Isensee et al. 2024, BraTS21, 5-fold CV): SwinUNETR 90.68, SwinUNETR-V2 90.74, "
            "nnU-Net 91.24, ResEnc L 91.13",
        ],
    ),
    Bundle(
        name="swin_unetr_mni_tissue",
        title="Swin UNETR (tiny): CSF / GM / WM on the MNI template (demo data)",
        model="swin_unetr_tiny",
        dataset="mni-tissue",
        dataset_dir="data/mni-tissue-2mm",
        max_epochs=35,
        val_interval=5,
        learning_rate=2e-3,
        num_samples=4,
        task="Brain tissue segmentation (CSF, GM, WM) of a T1 MRI template; the real demo task that runs on a CPU",
        data_howto=(
            "Built offline, nothing downloaded: `medswin data prepare mni-tissue data/` (needs the `[demo]` extra, "
            "nilearn ships the MNI ICBM152 2009a template) writes `data/mni-tissue-2mm/` in the Decathlon layout: "
            "the inferior 60% slab is the training case, the superior 40% slab the held-out test case (its labels "
            "are included). With one training case the validation uses that case; inference predicts the test slab."
        ),
        published=[
            "measured by `medswin demo` (medswin's own trainer, not this bundle; 5-minute CPU budget, 140 steps, "
            "held-out superior slab): Dice CSF 0.7188, GM 0.9382, WM 0.9440",
        ],
        measured_note=(
            "The data ships inside the nilearn wheel: no registration, no download. This bundle's own training "
            "(MONAI `SupervisedTrainer`, no time budget) was run only in the tests (tiny model, 2 iterations)."
        ),
    ),
    Bundle(
        name="ds_transunet_btcv",
        title="DS-TransUNet (3D): BTCV multi-organ CT segmentation",
        model="ds_transunet_small",
        dataset="btcv",
        dataset_dir="/workspace/data/BTCV",
        max_epochs=500,
        learning_rate=2e-4,
        task="Segmentation of 13 abdominal organs in CT with the dual-scale Swin encoder and deep supervision",
        data_howto=(
            "As for `swin_unetr_btcv`: `RawData/Training/img` + `label` from Synapse (syn3193805), or MONAI's "
            "`dataset_0.json` layout. Training uses deep supervision (0.6 out + 0.2 aux1 + 0.2 aux2, DiceCE each, "
            "medswin's `DeepSupervisionLoss`); in evaluation mode the network returns only its main output."
        ),
        published=[
            "DS-TransUNet was published in 2D (Lin et al. 2021); no 3D BTCV result exists to compare with. The "
            "Swin UNETR anchors of `swin_unetr_btcv` (0.79-0.82 mean Dice) are the closest reference",
        ],
    ),
    Bundle(
        name="cswin_unet_prostate",
        title="CSwin UNet (3D, anisotropic): bi-parametric prostate MRI",
        model="cswin_unet_small",
        dataset="prostate-bpmri",
        dataset_dir="/workspace/data/picai_nnunet",
        model_kwargs={"stem_stride": [2, 2, 1], "merge_strides": [[2, 2, 1], 2, 2, 2]},
        max_epochs=300,
        task="Segmentation of clinically significant prostate cancer lesions in bi-parametric MRI (T2W, ADC, DWI)",
        data_howto=(
            "Download the PI-CAI public training data (images from Zenodo, lesion delineations from "
            "`DIAGNijmegen/picai_labels`) and convert them with `picai_prep` to the nnU-Net raw layout: "
            "`imagesTr/CASE_0000.nii.gz` (T2W), `CASE_0001` (ADC), `CASE_0002` (high-b DWI), `labelsTr/CASE.nii.gz`. "
            "Volumes are resampled to 0.5 x 0.5 x 3.0 mm; the thick-slice axis is the last one (z) in MONAI's RAS "
            "order, so the stem and the first merge do not downsample it (`stem_stride` (2, 2, 1), "
            "`merge_strides` [(2, 2, 1), 2, 2, 2], the (1, 2, 2) of slice-first conventions): every stage sees "
            "nearly isotropic voxels (1 x 1 x 3 mm, then 2 x 2 x 3 mm) and inputs must be multiples of (32, 32, 8)."
        ),
        published=[
            "CSwin UNet has no published 3D result (Li et al. 2023 is 2D; this 3D design is medswin's); PI-CAI "
            "reports detection metrics (AUROC, AP), not Dice, so there is no Dice anchor for this task",
        ],
    ),
    Bundle(
        name="swin_x2s_spine",
        title="Swin-X2S: 3D vertebrae from two X-ray views (biplanar DRRs of spine CT)",
        model="swin_x2s_small",
        dataset="verse2020",
        dataset_dir="/workspace/data/verse2020-x2s",
        max_epochs=250,
        learning_rate=3e-5,
        biplanar=True,
        num_samples=1,
        task="3D segmentation of 25 vertebrae (C1-L6) from a coronal and a sagittal radiograph",
        data_howto=(
            "Download VerSe 2020 (OSF, CC BY-SA 4.0), put every CT in `images/` and its vertebra mask in `labels/` "
            "under the same file name, check it (`medswin data check DIR --dataset verse2020`; the rare T13, label "
            "28, is outside the label set: relabel or drop those cases), then make the biplanar dataset: "
            "`medswin data prepare-x2s DIR --dataset verse2020 -o /workspace/data/verse2020-x2s --size 128 160` "
            "(coronal and sagittal DRRs of each CT, the labels on the view-aligned 128 x 128 x 160 grid, "
            "`dataset.json`). The network takes both views stacked as two channels (`medswin.bundle.BiplanarPair`) "
            "so that MONAI's single-input tools (inferers, `verify_net_in_out`, `ckpt_export`) apply; predictions "
            "are written on the label grid recorded by `prepare-x2s` (`meta/{case}_drr.json`)."
        ),
        published=[
            "Swin-X2S README (Liu et al. 2025), on CTSpine1K, a different spine dataset: Swin-X2S-S Dice 83.84 / "
            "HD95 5.27 mm; their SwinUNETR baseline 77.13 Dice",
        ],
    ),
]


# ---------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------


def _t(target: str, **kwargs: Any) -> dict[str, Any]:
    return {"_target_": target, **kwargs}


def intensity(spec: DatasetSpec) -> dict[str, Any]:
    """The spec's normalisation as a MONAI transform on ``image``: the same table medswin's own pipelines use
    (:data:`medswin.data.transforms.NORMALIZATIONS`)."""
    name, args = intensity_arguments(spec)
    return _t(name, keys="image", **args)


def load(spec: DatasetSpec, keys: list[str]) -> dict[str, Any]:
    """The data layer's checked reading (no fallback reader), with the dataset's channels and label values."""
    args: dict[str, Any] = {"channels": spec.num_channels, "channel_names": list(spec.channel_names)}
    if "label" in keys:
        args.update(label_values=list(spec.label_values), dataset=spec.name)
    return _t("medswin.data.loading.LoadVolumed", keys=keys, label_key="label" if "label" in keys else None, **args)


def base_transforms(spec: DatasetSpec, keys: list[str]) -> list[dict[str, Any]]:
    """Load (checked), channel first, regions (BraTS), RAS, resample, normalise: medswin's pipeline in MONAI
    components."""
    steps = [load(spec, keys), _t("EnsureChannelFirstd", keys=keys)]
    if spec.regions and "label" in keys:
        steps.append(
            _t(
                "medswin.data.transforms.LabelToRegionsd",
                keys="label",
                regions={k: list(v) for k, v in spec.regions.items()},
            )
        )
    modes = ["bilinear" if k == "image" else "nearest" for k in keys]
    steps += [
        _t("Orientationd", keys=keys, axcodes="RAS", labels=None),
        _t("medswin.data.transforms.CheckResampledSized", keys="image", pixdim=list(spec.target_spacing)),
        _t("Spacingd", keys=keys, pixdim=list(spec.target_spacing), mode=modes if len(keys) > 1 else modes[0]),
        intensity(spec),
    ]
    return steps


def train_transforms(spec: DatasetSpec) -> list[dict[str, Any]]:
    """Volumes: foreground-biased random patches of ``@roi_size``, flips, rot90 in the first two axes when the
    roi is square there (else a turned patch would not batch), intensity jitter."""
    keys = ["image", "label"]
    return base_transforms(spec, keys) + [
        _t("CropForegroundd", keys=keys, source_key="image", allow_smaller=True),
        _t("SpatialPadd", keys=keys, spatial_size="@roi_size"),
        _t(
            "RandCropByPosNegLabeld",
            keys=keys,
            label_key="label",
            spatial_size="@roi_size",
            pos=1,
            neg=1,
            num_samples="@num_samples",
            image_key="image" if spec.is_ct else None,
            image_threshold=0,
        ),
        *[_t("RandFlipd", keys=keys, prob=0.5, spatial_axis=a) for a in range(3)],
        _t("RandRotate90d", keys=keys, prob="$0.2 if @roi_size[0] == @roi_size[1] else 0.0", max_k=3),
        _t("RandScaleIntensityd", keys="image", factors=0.1, prob=0.5),
        _t("RandShiftIntensityd", keys="image", offsets=0.1, prob=0.5),
        _t("EnsureTyped", keys=keys, track_meta=False),
    ]


def biplanar_transforms(kind: str, spec: DatasetSpec) -> list[dict[str, Any]]:
    """Swin-X2S: the two 2D views (checked, min-max scaled) stacked as ``image`` ``(2, H, W)``; the 3D label
    (checked against the CT dataset's label values) as is."""
    keys = VIEWS + ([] if kind == "inference" else ["label"])
    steps = [_t("medswin.data.loading.LoadViewd", keys=VIEWS)]
    if kind != "inference":
        steps.append(
            _t(
                "medswin.data.loading.LoadVolumed",
                keys="label",
                label_key="label",
                label_values=list(spec.label_values),
                dataset=spec.name,
            )
        )
    if kind == "train":
        steps += [
            _t("EnsureTyped", keys=keys, track_meta=False),
            _t("medswin.data.transforms.RandBiplanarAugmentd", prob=0.5, max_shift=0.1),
            _t("RandScaleIntensityd", keys=VIEWS, factors=0.1, prob=0.5),
            _t("RandShiftIntensityd", keys=VIEWS, offsets=0.1, prob=0.5),
        ]
    steps.append(_t("ConcatItemsd", keys=VIEWS, name="image", dim=0))
    out_keys = ["image"] + ([] if kind == "inference" else ["label"])
    steps.append(
        _t("EnsureTyped", keys=out_keys, track_meta=False) if kind == "train" else _t("EnsureTyped", keys=out_keys)
    )
    return steps


def compose(transforms: list[dict[str, Any]]) -> dict[str, Any]:
    """A MONAI ``Compose`` config."""
    return _t("Compose", transforms=transforms)


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------


def common(b: Bundle) -> dict[str, Any]:
    """Ids shared by every config: paths, model, device."""
    spec = b.spec
    out: dict[str, Any] = {
        "imports": ["$import os", "$import torch"],
        "bundle_root": ".",
        "ckpt_dir": "$@bundle_root + '/models'",
        "ckpt_path": "$@ckpt_dir + '/model.pt'",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": b.dataset_dir,
        "dataset_name": None if b.biplanar else spec.name,
        "model_name": b.model,
        "num_classes": spec.out_channels,
        "num_workers": 4,
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "amp": "$torch.cuda.is_available()",
    }
    if b.biplanar:
        out["view_size"] = list(b.view_size)
        out["network_def"] = _t(
            "medswin.bundle.BiplanarPair",
            model=_t(
                "medswin.models.create_model",
                name="@model_name",
                in_channels=1,
                out_channels="@num_classes",
                img_size="@view_size",
            ),
        )
    else:
        out["in_channels"] = spec.num_channels
        out["roi_size"] = list(b.roi_size or spec.roi_size)
        out["network_def"] = _t(
            "medswin.models.create_model",
            name="@model_name",
            in_channels="@in_channels",
            out_channels="@num_classes",
            **b.model_kwargs,
        )
    out["network"] = "$@network_def.to(@device)"
    return out


def export_ids() -> dict[str, Any]:
    """``network_export``: what ``ckpt_export`` traces (``network_def`` with medswin's fused kernels as plain ops)."""
    return {"network_export": _t("medswin.bundle.for_export", model="@network_def")}


def eval_postprocessing(b: Bundle) -> list[dict[str, Any]]:
    """Predictions (and labels) in the form the Dice metric takes."""
    k = b.spec.out_channels
    if b.spec.regions:
        return [_t("Activationsd", keys="pred", sigmoid=True), _t("AsDiscreted", keys="pred", threshold=0.5)]
    return [
        _t("Activationsd", keys="pred", softmax=True),
        _t("AsDiscreted", keys=["pred", "label"], argmax=[True, False], to_onehot=[k, k]),
    ]


def datalist(section: str) -> dict[str, Any]:
    """The cases of ``@dataset_dir`` (any layout medswin reads) for ``section``: a call of
    :func:`medswin.bundle.datalist`, by dotted path."""
    return _t("medswin.bundle.datalist", dataset_dir="@dataset_dir", section=section, dataset="@dataset_name")


def inferer(b: Bundle) -> dict[str, Any]:
    """Whole views for Swin-X2S; Gaussian-blended sliding windows of ``@roi_size`` for volumes."""
    if b.biplanar:
        return _t("SimpleInferer")
    return _t("SlidingWindowInferer", roi_size="@roi_size", sw_batch_size=1, overlap=0.5, mode="gaussian")


def key_metric(b: Bundle) -> dict[str, Any]:
    """Mean Dice over the foreground classes (over the regions for BraTS)."""
    return {
        "val_mean_dice": _t(
            "MeanDice",
            include_background=bool(b.spec.regions),
            output_transform="$monai.handlers.from_engine(['pred', 'label'])",
        )
    }


def loss(b: Bundle) -> dict[str, Any]:
    """DiceCE (softmax labels or sigmoid regions), wrapped for deep supervision or the two X2S views."""
    if b.spec.regions:
        base = _t("DiceCELoss", sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
    else:
        base = _t("DiceCELoss", to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5)
    if b.biplanar:
        return _t("medswin.training.losses.BiplanarLoss", loss=base, kl_weight=1.0)
    weights = getattr(meta_model(b.model, json.dumps(b.model_kwargs)), "deep_supervision_weights", None)
    if weights:
        return _t("medswin.training.losses.DeepSupervisionLoss", loss=base, weights=dict(weights))
    return base


def train_config(b: Bundle) -> dict[str, Any]:
    """``train.json``: SupervisedTrainer with validation, best-Dice checkpoint ``models/model.pt``."""
    spec = b.spec
    train_pre = biplanar_transforms("train", spec) if b.biplanar else train_transforms(spec)
    val_pre = (
        biplanar_transforms("val", b.spec)
        if b.biplanar
        else base_transforms(spec, ["image", "label"]) + [_t("EnsureTyped", keys=["image", "label"])]
    )
    cfg = common(b)
    cfg.update(
        {
            "learning_rate": b.learning_rate,
            "max_epochs": b.max_epochs,
            "epoch_length": None,
            "warmup_epochs": 1,
            "val_interval": b.val_interval,
            "batch_size": 1,
            "num_samples": b.num_samples,
            "cache_rate": 1.0,
            "steps_per_epoch": "$@epoch_length or len(@train#dataloader)",
            "loss": loss(b),
            "optimizer": _t(
                "torch.optim.AdamW", params="$@network.parameters()", lr="@learning_rate", weight_decay=1e-5
            ),
            "lr_scheduler": _t(
                "monai.optimizers.WarmupCosineSchedule",
                optimizer="@optimizer",
                warmup_steps="$@warmup_epochs * @steps_per_epoch",
                t_total="$@max_epochs * @steps_per_epoch",
            ),
            "train": {
                "preprocessing": compose(train_pre),
                "dataset": _t(
                    "CacheDataset",
                    data=datalist("training"),
                    transform="@train#preprocessing",
                    cache_rate="@cache_rate",
                    num_workers="@num_workers",
                ),
                "dataloader": _t(
                    "DataLoader",
                    dataset="@train#dataset",
                    batch_size="@batch_size",
                    shuffle=True,
                    num_workers="@num_workers",
                ),
                "inferer": _t("SimpleInferer"),
                "handlers": [
                    _t("LrScheduleHandler", lr_scheduler="@lr_scheduler", epoch_level=False, print_lr=False),
                    _t(
                        "ValidationHandler", validator="@validate#evaluator", epoch_level=True, interval="@val_interval"
                    ),
                    _t(
                        "StatsHandler",
                        tag_name="train_loss",
                        output_transform="$monai.handlers.from_engine(['loss'], first=True)",
                    ),
                ],
                "trainer": _t(
                    "SupervisedTrainer",
                    device="@device",
                    max_epochs="@max_epochs",
                    epoch_length="@epoch_length",
                    train_data_loader="@train#dataloader",
                    network="@network",
                    loss_function="@loss",
                    optimizer="@optimizer",
                    inferer="@train#inferer",
                    train_handlers="@train#handlers",
                    amp="@amp",
                ),
            },
            "validate": {
                "preprocessing": compose(val_pre),
                "dataset": _t(
                    "CacheDataset",
                    data=datalist("validation"),
                    transform="@validate#preprocessing",
                    cache_rate="@cache_rate",
                    num_workers="@num_workers",
                ),
                "dataloader": _t(
                    "DataLoader", dataset="@validate#dataset", batch_size=1, shuffle=False, num_workers="@num_workers"
                ),
                "inferer": inferer(b),
                "postprocessing": compose(eval_postprocessing(b)),
                "handlers": [
                    _t("StatsHandler", iteration_log=False),
                    _t(
                        "CheckpointSaver",
                        save_dir="@ckpt_dir",
                        save_dict={"model": "@network"},
                        save_key_metric=True,
                        key_metric_filename="model.pt",
                    ),
                ],
                "key_metric": key_metric(b),
                "evaluator": _t(
                    "SupervisedEvaluator",
                    device="@device",
                    val_data_loader="@validate#dataloader",
                    network="@network",
                    inferer="@validate#inferer",
                    postprocessing="@validate#postprocessing",
                    key_val_metric="@validate#key_metric",
                    val_handlers="@validate#handlers",
                    amp="@amp",
                ),
            },
            "initialize": ["$monai.utils.set_determinism(seed=0)"],
            "run": ["$@train#trainer.run()"],
            "training": ["$@train#trainer.run()"],
        }
    )
    return cfg


def multi_gpu_config(b: Bundle) -> dict[str, Any]:
    """``multi_gpu_train.json``, merged over ``train.json`` under ``torchrun``: DDP, DistributedSampler,
    rank 0 writes."""
    return {
        "+imports": ["$import torch.distributed as dist"],
        "device": (
            "$torch.device('cuda:' + os.environ.get('LOCAL_RANK', '0')) if torch.cuda.is_available() "
            "else torch.device('cpu')"
        ),
        "network": _t(
            "torch.nn.parallel.DistributedDataParallel",
            module="$@network_def.to(@device)",
            device_ids="$[@device] if @device.type == 'cuda' else None",
        ),
        "train#sampler": _t("DistributedSampler", dataset="@train#dataset", even_divisible=True, shuffle=True),
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        "train#trainer#train_handlers": "$@train#handlers[: -1 if dist.get_rank() > 0 else None]",
        "validate#sampler": _t("DistributedSampler", dataset="@validate#dataset", even_divisible=False, shuffle=False),
        "validate#dataloader#sampler": "@validate#sampler",
        "validate#evaluator#val_handlers": "$None if dist.get_rank() > 0 else @validate#handlers",
        "initialize": [
            "$dist.is_initialized() or "
            "dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo')",
            "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
            "$monai.utils.set_determinism(seed=0)",
        ],
        "run": ["$@train#trainer.run()"],
        "training": ["$@train#trainer.run()"],
        "finalize": ["$dist.is_initialized() and dist.destroy_process_group()"],
    }


def inference_postprocessing(b: Bundle) -> list[dict[str, Any]]:
    """Probabilities -> (inverted to the input grid) -> labels -> NIfTI in ``@output_dir``."""
    spec = b.spec
    save = _t(
        "SaveImaged",
        keys="pred",
        output_dir="@output_dir",
        output_postfix="seg",
        output_dtype="uint8",
        resample=False,
        separate_folder=False,
    )
    if b.biplanar:
        return [
            _t("Activationsd", keys="pred", softmax=True),
            _t("AsDiscreted", keys="pred", argmax=True),
            _t("medswin.bundle.BiplanarLabelGridd", keys="pred", view_key="image_coronal"),
            save,
        ]
    invert = _t(
        "Invertd", keys="pred", transform="@preprocessing", orig_keys="image", nearest_interp=False, to_tensor=True
    )
    if spec.regions:
        return [
            _t("Activationsd", keys="pred", sigmoid=True),
            invert,
            _t("medswin.bundle.RegionsToLabelsd", keys="pred", regions={k: list(v) for k, v in spec.regions.items()}),
            save,
        ]
    return [_t("Activationsd", keys="pred", softmax=True), invert, _t("AsDiscreted", keys="pred", argmax=True), save]


def evaluator_section(
    b: Bundle, split: str, pre: list, post: list, extra_handlers: list, key_metric: Any = None
) -> dict[str, Any]:
    """What ``inference.json`` and ``evaluate.json`` share: the ``split`` datalist through ``pre``, the
    sliding-window inferer, ``post``, the checkpoint loader, and a ``SupervisedEvaluator`` that runs it all
    (``key_metric`` when given)."""
    metric = {"key_val_metric": "@key_metric"} if key_metric is not None else {}
    section: dict[str, Any] = {
        "datalist": datalist(split),
        "preprocessing": compose(pre),
        "dataset": _t("Dataset", data="@datalist", transform="@preprocessing"),
        "dataloader": _t("DataLoader", dataset="@dataset", batch_size=1, shuffle=False, num_workers="@num_workers"),
        "inferer": inferer(b),
        "postprocessing": compose(post),
        **({"key_metric": key_metric} if key_metric is not None else {}),
        "handlers": [
            _t("CheckpointLoader", load_path="@ckpt_path", load_dict={"model": "@network"}, map_location="@device"),
            _t("StatsHandler", iteration_log=False),
            *extra_handlers,
        ],
        "evaluator": _t(
            "SupervisedEvaluator",
            device="@device",
            val_data_loader="@dataloader",
            network="@network",
            inferer="@inferer",
            postprocessing="@postprocessing",
            **metric,
            val_handlers="@handlers",
            amp="@amp",
        ),
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
        "evaluating": ["$@evaluator.run()"],
    }
    return section


def inference_config(b: Bundle) -> dict[str, Any]:
    """``inference.json``: predict every input of ``@dataset_dir`` and write label maps on the inputs' grids."""
    pre = (
        biplanar_transforms("inference", b.spec)
        if b.biplanar
        else base_transforms(b.spec, ["image"]) + [_t("EnsureTyped", keys="image")]
    )
    cfg = {**common(b), **export_ids()}
    cfg.update(evaluator_section(b, "inference", pre, inference_postprocessing(b), []))
    return cfg


def evaluate_config(b: Bundle) -> dict[str, Any]:
    """``evaluate.json``: Dice of the trained model on the validation cases, per case and class, in ``@output_dir``."""
    pre = (
        biplanar_transforms("val", b.spec)
        if b.biplanar
        else base_transforms(b.spec, ["image", "label"]) + [_t("EnsureTyped", keys=["image", "label"])]
    )
    saver = _t(
        "MetricsSaver",
        save_dir="@output_dir",
        metrics=["val_mean_dice"],
        metric_details=["val_mean_dice"],
        batch_transform="$lambda x: [xx['image'].meta for xx in x]",
        summary_ops="*",
    )
    cfg = common(b)
    cfg.update(evaluator_section(b, "validation", pre, eval_postprocessing(b), [saver], key_metric=key_metric(b)))
    return cfg


# ---------------------------------------------------------------------------------------------
# metadata, docs, licence
# ---------------------------------------------------------------------------------------------


def metadata(b: Bundle) -> dict[str, Any]:
    """``metadata.json``: versions, task, data source, intended use, and the network's inputs and outputs."""
    spec = b.spec
    names = list(spec.output_names)
    if b.biplanar:
        spatial_in: list[Any] = list(b.view_size)
        spatial_out: list[Any] = [b.view_size[0], b.view_size[0], b.view_size[1]]
        image = {
            "type": "image",
            "format": "magnitude",
            "modality": "XR",
            "num_channels": 2,
            "spatial_shape": spatial_in,
            "dtype": "float32",
            "value_range": [0, 1],
            "is_patch_data": False,
            "channel_def": {
                "0": "coronal DRR (rays along y; axes x, z)",
                "1": "sagittal DRR (rays along x; axes y, z)",
            },
        }
    else:
        model = meta_model(b.model, json.dumps(b.model_kwargs))
        divisor = model.size_divisor if isinstance(model.size_divisor, tuple) else (model.size_divisor,) * 3
        spatial_in = spatial_out = [f"{d}*n" for d in divisor]
        ct = spec.is_ct
        image = {
            "type": "image",
            "format": "hounsfield" if ct else "magnitude",
            "modality": "CT" if ct else "MR",
            "num_channels": spec.num_channels,
            "spatial_shape": spatial_in,
            "dtype": "float32",
            "value_range": [spec.normalization["b_min"], spec.normalization["b_max"]] if ct else [],
            "is_patch_data": True,
            "channel_def": {str(i): c for i, c in enumerate(spec.channel_names)},
        }
    kind = "sigmoid per region (multi-label)" if spec.regions else "softmax over classes"
    pred = {
        "type": "image",
        "format": "segmentation",
        "num_channels": spec.out_channels,
        "spatial_shape": spatial_out,
        "dtype": "float32",
        "value_range": [],
        "is_patch_data": not b.biplanar,
        "channel_def": {str(i): n for i, n in enumerate(names)},
    }
    labels = ", ".join(f"{k} {v}" for k, v in spec.labels.items())
    versions = {"medswin": medswin.__version__, **PACKAGES}
    return {
        "schema": SCHEMA_URL,
        "version": "0.1.0",
        "changelog": {"0.1.0": "first release with medswin 0.1.0"},
        "monai_version": VERSIONS["monai"],
        "pytorch_version": VERSIONS["pytorch"],
        "numpy_version": VERSIONS["numpy"],
        "required_packages_version": versions,
        "name": b.title,
        "task": b.task,
        "description": (
            f"{b.title}. Network: medswin `{b.model}` ({model_info(b.model)['paper']}), built by "
            f"`medswin.models.create_model`. Data: {spec.description}."
        ),
        "authors": "medswin contributors",
        "copyright": "Copyright (c) medswin contributors",
        "intended_use": "Research only; not a medical device and not validated for clinical use.",
        "data_source": spec.source,
        "data_license": spec.licence,
        "data_type": "nibabel",
        "image_classes": (
            f"{spec.num_channels} channel(s): {', '.join(spec.channel_names)}, resampled to "
            f"{list(spec.target_spacing)} mm (RAS), {spec.normalization['type']} normalisation"
        )
        if not b.biplanar
        else "two DRR views (coronal, sagittal), min-max scaled to [0, 1], stacked as channels",
        "label_classes": f"one channel, values: {labels}",
        "pred_classes": f"{spec.out_channels} channels ({kind}): {', '.join(names)}",
        "references": [c for c in (spec.citation, model_info(b.model)["paper"]) if c],
        "network_data_format": {"inputs": {"image": image}, "outputs": {"pred": pred}},
    }


def readme(b: Bundle) -> str:
    """``docs/README.md``: :data:`README_TEMPLATE` filled in for the bundle (what it does, the data, the commands to
    train, evaluate, infer, export and verify, the expected accuracy)."""
    spec = b.spec
    if b.biplanar:
        tiny_size = "view_size=[64,64] _meta_#network_data_format#inputs#image#spatial_shape=[64,64]"
    else:
        divisor = meta_model(b.model, json.dumps(b.model_kwargs)).size_divisor
        z = divisor[2] * 2 if isinstance(divisor, tuple) else 64
        tiny_size = f"roi_size=[64,64,{z}]"
    roi_size = b.roi_size or spec.roi_size
    shape = [1, 2, *b.view_size] if b.biplanar else [1, spec.num_channels, *roi_size]
    roi = "views " + "x".join(map(str, b.view_size)) if b.biplanar else "roi " + "x".join(map(str, roi_size))
    if b.biplanar:
        onnx_monai = onnx_medswin = onnx_note = ""
    else:
        onnx_shape = [2, spec.num_channels, *roi_size]  # torch.export fixes an axis traced at size 1
        onnx_monai = (
            "# ONNX export, batch dynamic (torch.export of the same network_export)\n"
            "python -m monai.bundle onnx_export network_export --filepath models/model.onnx --ckpt_file "
            "models/model.pt --meta_file configs/metadata.json --config_file configs/inference.json --input_shape "
            f"\"{onnx_shape}\" --converter_kwargs \"{{'input_names': ['image'], 'dynamic_axes': "
            "{'image': {0: 'batch'}}}\"\n"
        )
        onnx_medswin = (
            f"medswin bundle export {b.name} --format onnx     # models/model.onnx with the dataset spec: "
            "medswin predict --model models/model.onnx\n"
        )
        onnx_note = (
            " ONNX export (`onnx_export`, or `medswin bundle export --format onnx`, which also writes the dataset spec "
            "into the file's metadata and checks the file in ONNX Runtime) goes through `torch.export` of the same "
            "`network_export`: in plain-ops mode each image of a batch is gathered with the one-image window plan, so "
            "the batch axis stays dynamic."
        )
    preprocessing = (
        f"RAS orientation, {list(spec.target_spacing)} mm spacing, {spec.normalization['type']} normalisation"
    )
    if spec.regions:
        preprocessing += ", labels to regions " + ", ".join(f"{k} = {list(v)}" for k, v in spec.regions.items())
    if b.biplanar:
        preprocessing += " (for the CT the views are made from; the views themselves are min-max scaled)"
    accuracy = [
        f"- Measured with medswin: {p}." if p.startswith("measured") else f"- Published (not measured here): {p}."
        for p in b.published
    ]
    return README_TEMPLATE.read_text().format(
        title=b.title,
        task=b.task,
        model=b.model,
        paper=model_info(b.model)["paper"],
        roi=roi,
        in_channels=2 if b.biplanar else spec.num_channels,
        out_channels=spec.out_channels,
        outputs=", ".join(spec.output_names),
        source=spec.source,
        licence=spec.licence,
        citation=spec.citation or "-",
        data_howto=b.data_howto,
        dataset=spec.name,
        preprocessing=preprocessing,
        dataset_dir=b.dataset_dir,
        shape=shape,
        onnx_monai=onnx_monai,
        onnx_medswin=onnx_medswin,
        onnx_note=onnx_note,
        name=b.name,
        tiny=b.tiny,
        tiny_size=tiny_size,
        accuracy="\n".join(accuracy),
        measured=b.measured_note or NOT_MEASURED,
        notes="".join(f"{note}\n\n" for note in b.notes),
    )


LICENSE = """\
Copyright (c) medswin contributors

Licensed under the Apache License, Version 2.0 (the "License"); you may not use the files of this
bundle except in compliance with the License. You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the License
is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or
implied. See the License for the specific language governing permissions and limitations under the
License.

The licence covers the configs, docs and any weights trained with them, not the data: the data
keeps its own licence ({data_licence}; see docs/README.md).
"""

LOGGING_CONF = """\
[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def render(b: Bundle) -> dict[str, str]:
    """Every generated file of a bundle: relative path -> text."""

    def dump(obj: Any) -> str:
        return json.dumps(obj, indent=4) + "\n"

    return {
        "configs/metadata.json": dump(metadata(b)),
        "configs/train.json": dump(train_config(b)),
        "configs/multi_gpu_train.json": dump(multi_gpu_config(b)),
        "configs/inference.json": dump(inference_config(b)),
        "configs/evaluate.json": dump(evaluate_config(b)),
        "configs/logging.conf": LOGGING_CONF,
        "docs/README.md": readme(b),
        "LICENSE": LICENSE.format(data_licence=b.spec.licence),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the bundles (or, with ``--check``, list the files that differ and exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=ROOT, help="bundles folder (default: next to this script)")
    args = parser.parse_args(argv)
    stale = []
    for b in BUNDLES:
        for rel, text in render(b).items():
            path = args.out / b.name / rel
            if args.check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(str(path))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{path.name}")
            tmp.write_text(text)
            tmp.replace(path)
    if stale:
        print("out of date (run python bundles/generate.py):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
