"""Generate the tutorial notebooks in this folder from the cell sources below.

    python notebooks/build.py            # (re)write every notebooks/NN_*.ipynb
    python notebooks/build.py --check    # exit 1 when a stored notebook differs from what this file generates

Why a script: a notebook stored as JSON is hard to review and tends to be committed with outputs;
here every cell is a Python string, reviewed like code, and the ``.ipynb`` files are always written
WITHOUT outputs or execution counts and with stable cell ids (regenerating gives the same bytes).
``tests/test_notebooks.py`` executes every notebook so none can rot.

Each notebook's first cell says what it shows, which data it uses (the REAL ``mni-tissue`` demo data
from the nilearn wheel, or SYNTHETIC phantoms from :mod:`medswin.data.synthetic`) and its run time on
a 2-core CPU.  Everything a notebook writes goes to a fresh temporary folder, never into the repository.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

Cell = tuple[str, str]  # ("markdown" | "code", source)


def md(text: str) -> Cell:
    """A markdown cell (the text is dedented and stripped)."""
    return ("markdown", textwrap.dedent(text).strip("\n"))


def code(text: str) -> Cell:
    """A code cell (the text is dedented and stripped)."""
    return ("code", textwrap.dedent(text).strip("\n"))


def setup(prefix: str, stdlib: tuple[str, ...] = (), third_party: tuple[str, ...] = ()) -> Cell:
    """The first code cell of every notebook: inline figures, imports (plus ``stdlib`` / ``third_party``
    import lines), INFO logging and ``work``, a fresh temporary folder for everything the notebook writes."""
    stdlib_lines = sorted({"import logging", "import tempfile", "import time", "import warnings", *stdlib})
    stdlib_lines.append("from pathlib import Path")
    froms = {
        "from IPython.display import Image, Markdown, display",
        "from matplotlib.figure import Figure",
        *third_party,
    }
    third_lines = ["import numpy as np", "import torch", *sorted(froms, key=str.lower)]
    imports = "\n".join(stdlib_lines) + "\n\n" + "\n".join(third_lines)
    return code(
        f'''
%matplotlib inline
{imports}

import medswin

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)  # "no GPU DICOM codec": not needed
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
work = Path(tempfile.mkdtemp(prefix="{prefix}"))  # everything this notebook writes goes here
print(f"medswin {{medswin.__version__}}, torch {{torch.__version__}}, {{torch.get_num_threads()}} CPU thread(s)")
print(f"working folder: {{work}}")
'''
    )


# ---------------------------------------------------------------------------------------------
# 01: quick start
# ---------------------------------------------------------------------------------------------

QUICKSTART: list[Cell] = [
    md(
        """
        # 01 - Quick start: a volume in, a segmentation and its scores out

        What this shows: load a volume, create a model by name, train it for a few steps, predict a
        whole held-out volume with sliding windows (back on the input's own grid), evaluate it (Dice,
        HD95, NSD) and look at overlays.

        **Data: real.** The `mni-tissue` demo task (CSF / grey matter / white matter on the MNI ICBM152
        2009a template), built offline by `medswin.data.demo.build_mni_tissue` from the files inside the
        nilearn wheel (`pip install 'medswin[demo]'`; nothing is downloaded). The model trains on the
        inferior 60% of the brain and is scored on the superior 40%.

        **Run time:** about 1-2 minutes on a 2-core CPU. The model is trained for **20 steps only**: this is a
        tour of the API, not a trained model (`medswin demo` trains for 5 minutes; see the README).
        """
    ),
    setup("medswin_quickstart_", third_party=("from matplotlib.colors import ListedColormap",)),
    md(
        """
        ## 1. Load a volume

        `load_volume` reads NIfTI, NRRD, MetaImage or a DICOM series folder into a `Volume`: an array
        `(C, X, Y, Z)` and its RAS affine (mm), the same world coordinates whatever the reader.
        """
    ),
    code(
        """
        from medswin.data.demo import build_mni_tissue
        from medswin.data.io import load_volume

        t0 = time.perf_counter()
        data = build_mni_tissue(work / "data")["2mm"]  # Decathlon layout: imagesTr/ labelsTr/ imagesTs/ labelsTs/
        print(f"built {data.name} in {time.perf_counter() - t0:.1f} s:", sorted(p.name for p in data.iterdir()))

        image = load_volume(data / "imagesTs" / "mni_superior.nii.gz")  # the held-out superior slab
        truth = load_volume(data / "labelsTs" / "mni_superior.nii.gz")
        print("image", image.array.shape, "spacing (mm)", image.spacing, "first voxel at (mm)", image.world([0, 0, 0]))
        counts = np.bincount(truth.array.ravel().astype(np.int64), minlength=4)
        print("voxels per label:", dict(zip(["background", "CSF", "GM", "WM"], counts.tolist())))
        """
    ),
    code(
        '''
        TISSUES = ListedColormap([(0, 0, 0, 0), (0.2, 0.6, 1.0, 0.6), (1.0, 0.35, 0.2, 0.6), (1.0, 0.9, 0.3, 0.6)])


        def show_axial(picture: np.ndarray, overlays: list[tuple[str, np.ndarray]], slices: list[int]) -> Figure:
            """One row per axial slice z of the (X, Y, Z) arrays: the image alone, then with each label map."""
            fig = Figure(figsize=(3.2 * (1 + len(overlays)), 3.2 * len(slices)))
            axes = fig.subplots(len(slices), 1 + len(overlays), squeeze=False)
            for row, z in zip(axes, slices):
                for ax, (title, labels) in zip(row, [("T1", None), *overlays]):
                    ax.imshow(picture[:, :, z].T, cmap="gray", origin="lower")  # x to the right, y (anterior) up
                    if labels is not None:
                        ax.imshow(labels[:, :, z].T, cmap=TISSUES, vmin=0, vmax=3, origin="lower", interpolation="nearest")
                    ax.set_title(f"{title}, z = {z}")
                    ax.set_axis_off()
            fig.tight_layout()
            return fig


        show_axial(image.array[0], [("ground truth (CSF blue, GM red, WM yellow)", truth.array[0])], [2, 10])
        '''
    ),
    md(
        """
        ## 2. A model by name

        Every architecture registers `*_tiny`, `*_small` and `*_base` presets. A model maps
        `(B, in_channels, X, Y, Z)` to logits `(B, out_channels, X, Y, Z)`; sizes must be multiples of its
        `size_divisor`, and mistakes give one clear line.
        """
    ),
    code(
        """
        for name in medswin.list_models("*_tiny"):
            info = medswin.model_info(name, in_channels=1, out_channels=4)
            print(f"{name:18s} {info['params'] / 1e6:5.1f}M parameters, sizes multiple of {info['size_divisor']}")

        model = medswin.create_model("swin_unetr_tiny", in_channels=1, out_channels=4)  # background, CSF, GM, WM
        with torch.no_grad():
            logits = model(torch.randn(1, 1, 64, 64, 32))  # (B, C, X, Y, Z)
        print("logits", tuple(logits.shape))
        assert logits.shape == (1, 4, 64, 64, 32)

        try:
            medswin.create_model("swin_unetr_tiyn", in_channels=1, out_channels=4)
        except KeyError as exc:  # a typo: the error suggests the closest names
            print(exc.args[0].split(" Available")[0])
        """
    ),
    md(
        """
        ## 3. Twenty training steps

        So that the prediction below is not random, train for 20 steps on the inferior slab (64 x 64 x 32
        patches, AdamW, warm-up + cosine, bf16 where the CPU computes it natively). Notebook 02 shows
        training properly: a dataset of your own, validation, curves.
        """
    ),
    code(
        """
        from medswin.training import TrainConfig, Trainer

        config = TrainConfig(
            model="swin_unetr_tiny", dataset="mni-tissue", data=str(data), out=str(work / "run"),
            roi_size=[64, 64, 32], num_samples=2, lr=2e-3, epochs=2, iterations_per_epoch=10, val_every=0, seed=0,
        )
        summary = Trainer(config).fit()
        print(f"{summary['steps']} steps in {summary['seconds']:.0f} s; checkpoints in {summary['out']}")
        """
    ),
    md(
        """
        ## 4. Sliding-window prediction of the whole held-out volume

        `Predictor` runs the dataset's inference transforms, Gaussian-blended sliding windows of the
        training roi, and inverts the transforms: the label map lands on the input's own grid.
        """
    ),
    code(
        """
        from medswin.data.io import write_nifti
        from medswin.inference import Predictor

        predictor = Predictor.from_checkpoint(work / "run" / "checkpoint_last.pt")  # model, weights, spec, roi inside
        print("roi", predictor.roi, "overlap", predictor.overlap, "windows per forward pass", predictor.sw_batch_size)
        t0 = time.perf_counter()
        prediction = predictor.predict(data / "imagesTs" / "mni_superior.nii.gz")
        print(f"predicted a {prediction.labels.shape} label map in {time.perf_counter() - t0:.1f} s")

        assert prediction.labels.shape == truth.spatial_shape  # the input's grid: same shape ...
        assert np.allclose(prediction.affine, truth.affine)  # ... and same affine
        pred_path = write_nifti(prediction.labels, prediction.affine, work / "prediction" / "mni_superior.nii.gz")
        """
    ),
    md(
        """
        ## 5. Evaluate

        Per class Dice, HD95 (mm) and NSD (1 mm tolerance), with MONAI's definitions; the report writes
        CSV, JSON, Markdown, a box plot and overlays of the best and worst case.
        """
    ),
    code(
        """
        from medswin.evaluation import evaluate_pairs, markdown_table, match_cases, summarize, write_report

        rows = evaluate_pairs(match_cases(work / "prediction", data / "labelsTs"), predictor.spec)
        assert {row["class"] for row in rows} == {"CSF", "GM", "WM"} and all(0 <= row["dice"] <= 1 for row in rows)
        display(Markdown(markdown_table(summarize(rows, predictor.spec))))

        report = write_report(rows, predictor.spec, work / "report", images={"mni_superior": data / "imagesTs" / "mni_superior.nii.gz"})
        print("report files:", sorted(path.name for path in report.values()))
        display(Image(filename=str(report["overlay_best"])))
        """
    ),
    md(
        """
        ## 6. Overlays, slice by slice

        After 20 steps the large white-matter and grey-matter regions are found; thin CSF is the
        hardest class. `medswin demo` (5 minutes of training) reaches CSF >= 0.65, GM and WM >= 0.92 on this task
        on AMX, AVX-512 and AVX2 CPUs alike (the README's demo table, one row per CPU class).
        """
    ),
    code(
        """
        show_axial(image.array[0], [("ground truth", truth.array[0]), ("prediction", prediction.labels)], [2, 8, 14])
        """
    ),
    md(
        """
        ## Next

        * `02_train_on_your_data.ipynb`: your folder of NIfTI files, a dataset entry, training with validation.
        * The same pipeline from the command line: `medswin demo`, or `medswin train` / `medswin predict` /
          `medswin evaluate` (README, "CLI").
        """
    ),
]


# ---------------------------------------------------------------------------------------------
# 02: train on your data
# ---------------------------------------------------------------------------------------------

TRAIN_ON_YOUR_DATA: list[Cell] = [
    md(
        """
        # 02 - Train on your own data

        What this shows: a folder of NIfTI files -> a dataset entry (YAML) -> an integrity check ->
        training with validation -> curves -> predictions for new cases -> an evaluation report.

        **Data: synthetic.** Seeded MRI-like phantoms from `medswin.data.synthetic.make_phantom` (two
        nested or disjoint ellipsoids, texture, bias field and noise, 1.5 x 1.5 x 2 mm voxels), written as
        plain NIfTI files in an `images/` + `labels/` folder: replace it with your own folder.

        **Run time:** about 1-2 minutes on a 2-core CPU. **20 training steps only**: the numbers show the
        pipeline working, not what the model reaches when trained.
        """
    ),
    setup("medswin_your_data_", stdlib=("import csv",)),
    md(
        """
        ## 1. Your folder of NIfTI files

        Five labelled cases to train on (one of them held out for validation) and one new case to
        predict. Images and labels share file names; the `flat` layout expects exactly that.
        """
    ),
    code(
        """
        from medswin.data.synthetic import make_phantom, write_synthetic_dataset

        LABELS = {"background": 0, "organ": 1, "lesion": 2}
        phantoms = [
            make_phantom((64, 64, 48), num_classes=3, spacing=(1.5, 1.5, 2.0), noise=0.1, bias_field=0.3, seed=seed)
            for seed in range(6)
        ]
        my_data = write_synthetic_dataset(work / "my_data", "flat", phantoms[:5], channel_names=["MRI"], labels=LABELS)
        new_cases = write_synthetic_dataset(work / "new_cases", "flat", phantoms[5:], channel_names=["MRI"], labels=LABELS)
        for path in sorted(my_data.rglob("*.nii.gz")):
            print(path.relative_to(work))
        """
    ),
    md(
        """
        ## 2. A dataset entry

        A YAML entry with nnU-Net-style keys tells medswin the channels, labels, layout, target spacing,
        normalisation and patch size. Pass the file wherever a dataset name is accepted (`--datasets` on
        the command line). Every validation error names the file, the entry and the key.
        """
    ),
    code(
        """
        from medswin.data.spec import DatasetSpecError, load_dataset_specs

        spec_file = work / "my_datasets.yaml"
        spec_file.write_text('''\\
        my-phantoms:
          description: MRI phantoms, one channel, an organ and a lesion
          channel_names: [MRI]
          labels: {background: 0, organ: 1, lesion: 2}
          file_ending: .nii.gz
          layout: flat                       # images/ + labels/ with the same file names
          target_spacing: [1.5, 1.5, 2.0]    # mm; every case is resampled to it
          normalization: {type: zscore, nonzero: false}
          roi_size: [64, 64, 32]             # training patch = sliding window; multiples of 32 for these models
          licence: synthetic (medswin.data.synthetic)
          source: notebooks/02_train_on_your_data.ipynb
        ''')
        spec = load_dataset_specs([spec_file])["my-phantoms"]
        print(f"{spec.name}: channels {spec.channel_names}, {spec.out_channels} output channels, roi {spec.roi_size}")

        typo = spec_file.read_text().replace("normalization", "normalisation")
        (work / "typo.yaml").write_text(typo)
        try:
            load_dataset_specs([work / "typo.yaml"])
        except DatasetSpecError as exc:
            print("a typo is caught:", exc)
        """
    ),
    md(
        """
        `check_dataset` (or `medswin data check`) reads every case and lists every problem: unreadable
        files, NaN, wrong channel count, image/label grid mismatch, label values outside the entry.
        """
    ),
    code(
        """
        from medswin.data.check import check_dataset

        report = check_dataset(my_data, spec, progress=False)
        print(report.text())
        assert report.ok and report.cases == 5
        """
    ),
    md(
        """
        ## 3. Train with validation

        `TrainConfig` holds the whole recipe (also loadable from YAML: `medswin train --config`). Fold 0
        of a seeded 5-fold split holds one case out for validation, scored every 2 epochs by
        sliding-window Dice; the best epoch is kept in `checkpoint_best.pt`. `metrics.csv` and
        `curves.png` land in the run folder.
        """
    ),
    code(
        """
        from medswin.training import TrainConfig, Trainer

        config = TrainConfig(
            model="swin_unetr_tiny", dataset="my-phantoms", datasets_files=[str(spec_file)], data=str(my_data),
            out=str(work / "run"), epochs=4, iterations_per_epoch=5, num_samples=2, lr=2e-3, val_every=2,
            n_folds=5, fold=0, seed=0,
        )
        trainer = Trainer(config)
        print("training cases:", [c["case"] for c in trainer.train_cases], "validation:", [c["case"] for c in trainer.val_cases])
        summary = trainer.fit()
        print(f"{summary['steps']} steps in {summary['seconds']:.0f} s; best validation Dice {summary['best_metric']:.3f} "
              f"(epoch {summary['best_epoch']})")
        """
    ),
    code(
        """
        with open(work / "run" / "metrics.csv", newline="") as f:
            history = list(csv.DictReader(f))
        columns = ["epoch", "step", "train_loss", "dice_organ", "dice_lesion", "dice_mean"]
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in history:
            lines.append("| " + " | ".join(f"{float(row[c]):.4f}" if row.get(c) and c not in ("epoch", "step")
                                           else (row.get(c) or "") for c in columns) + " |")
        display(Markdown("\\n".join(lines)))
        display(Image(filename=str(work / "run" / "curves.png")))
        """
    ),
    md(
        """
        ## 4. Predict new cases and write the report

        `resolve_inputs` accepts a file, a DICOM series folder, a folder of volumes or, as here, a dataset
        folder (its images). Predictions are written on each input's own grid, named after the case.
        """
    ),
    code(
        """
        from medswin.evaluation import evaluate_pairs, markdown_table, match_cases, summarize, write_report
        from medswin.data.inputs import resolve_inputs
        from medswin.inference import Predictor

        predictor = Predictor.from_checkpoint(work / "run" / "checkpoint_best.pt")
        cases = resolve_inputs(new_cases, predictor.spec)  # [(case, [image file(s)]), ...]
        written = predictor.predict_cases(cases, work / "predictions")
        print("written:", [path.name for path in written])

        rows = evaluate_pairs(match_cases(work / "predictions", new_cases / "labels"), predictor.spec)
        display(Markdown(markdown_table(summarize(rows, predictor.spec))))
        report = write_report(rows, predictor.spec, work / "report", images={case: paths[0] for case, paths in cases})
        display(Image(filename=str(report["overlay_best"])))
        """
    ),
    md(
        """
        ## 5. The same from the command line

        ```bash
        medswin data check my_data --dataset my-phantoms --datasets my_datasets.yaml
        medswin train --dataset my-phantoms --datasets my_datasets.yaml --data my_data --model swin_unetr_tiny \\
                      --out run --epochs 4 --iterations-per-epoch 5 --val-every 2
        medswin predict -i new_cases -o predictions --model run/checkpoint_best.pt
        medswin evaluate --pred predictions --gt new_cases/labels --dataset my-phantoms --datasets my_datasets.yaml \\
                         --images new_cases/images --out report
        ```

        The cheap ones run here through `medswin.cli.main` (the function behind the `medswin` command):
        """
    ),
    code(
        """
        from medswin.cli import main

        assert main(["data", "check", str(my_data), "--dataset", "my-phantoms", "--datasets", str(spec_file)]) == 0
        assert main(["evaluate", "--pred", str(work / "predictions"), "--gt", str(new_cases / "labels"),
                     "--dataset", "my-phantoms", "--datasets", str(spec_file), "--out", str(work / "report_cli")]) == 0
        """
    ),
]


# ---------------------------------------------------------------------------------------------
# 05: Swin-X2S
# ---------------------------------------------------------------------------------------------

SWIN_X2S: list[Cell] = [
    md(
        """
        # 05 - Swin-X2S: 3D segmentation from two X-rays

        What this shows: a CT volume -> two digitally reconstructed radiographs (coronal and sagittal
        DRRs) -> a biplanar dataset -> a Swin-X2S model trained on the two views -> a 3D label volume
        predicted from two views alone -> Dice, HD95, centroid error and identification rate.

        **Data: synthetic.** Seeded CT-like spine phantoms from `medswin.data.synthetic.make_spine_phantom`
        (a soft-tissue torso in air with four bone-like vertebrae L1-L4 of random size and position, in
        Hounsfield units). Phantoms are far easier than patients' radiographs.

        **Run time:** about 1-2 minutes on a 2-core CPU. `swin_x2s_tiny` (64 x 64 views) is trained for **30
        steps only**: this shows the pipeline, not what Swin-X2S achieves (`benchmarks/swin_x2s_synthetic.py`
        trains longer).
        """
    ),
    setup("medswin_swin_x2s_", stdlib=("import json",)),
    md(
        """
        ## 1. A CT and its two X-ray views

        A DRR pixel is the line integral of the attenuation `max(HU + 1000, 0) / 1000` along its ray
        (parallel beam here; `perspective=True` gives a cone beam). The label is resampled onto a 3D grid
        aligned with the views: coronal pixel `(i, j)` looks through voxels `(i, :, j)`, sagittal pixel
        `(k, j)` through `(:, k, j)`.
        """
    ),
    code(
        '''
        from medswin.data.drr import load_view, make_drrs, view_to_radiograph
        from medswin.data.io import load_volume, write_nifti
        from medswin.data.synthetic import make_spine_phantom

        phantom = make_spine_phantom((48, 48, 64), seed=0)  # (1, X, Y, Z) in HU, 2 mm voxels
        ct = load_volume(write_nifti(phantom.image[0], phantom.affine, work / "ct.nii.gz"))
        ct_label = load_volume(write_nifti(phantom.label.astype(np.uint8), phantom.affine, work / "ct_label.nii.gz"))
        drrs = make_drrs(ct, ct_label, height=64, width=64)
        geometry = drrs["geometry"]
        print("CT", ct.array.shape, "HU range", ct.array.min().round(), ct.array.max().round())
        print("coronal", drrs["coronal"].shape, "sagittal", drrs["sagittal"].shape, "view-aligned label", drrs["label"].shape,
              f"pixel spacing {geometry.pixel_spacing:.2f} mm")
        assert drrs["label"].shape == (64, 64, 64) and drrs["coronal"].shape == (64, 64)

        def vertebrae(ax, labels_xz: np.ndarray) -> None:
            """Draw an (x, z) label map over what the axes show (background transparent, L1-L4 in colours)."""
            shown = np.ma.masked_equal(view_to_radiograph(labels_xz), 0)
            ax.imshow(shown, cmap="tab10", vmin=0, vmax=9, alpha=0.6, interpolation="nearest")


        fig = Figure(figsize=(12, 3.4))
        axes = fig.subplots(1, 4)
        spine_y = int(np.argmax((ct_label.array[0] > 0).sum(axis=(0, 2))))  # the coronal plane through the vertebrae
        axes[0].imshow(view_to_radiograph(ct.array[0, :, spine_y, :]), cmap="gray", vmin=-1000, vmax=1000)
        axes[0].set_title(f"CT, coronal slice y = {spine_y}")
        axes[1].imshow(view_to_radiograph(drrs["coronal"]), cmap="gray")
        axes[1].set_title("coronal DRR")
        axes[2].imshow(view_to_radiograph(drrs["sagittal"]), cmap="gray")
        axes[2].set_title("sagittal DRR")
        axes[3].imshow(view_to_radiograph(drrs["coronal"]), cmap="gray")
        vertebrae(axes[3], drrs["label"].max(axis=1))
        axes[3].set_title("coronal DRR + labels L1-L4 (projected)")
        for ax in axes:
            ax.set_axis_off()
        fig.tight_layout()
        fig
        '''
    ),
    md(
        """
        ## 2. A biplanar dataset from a CT segmentation dataset

        `prepare_biplanar` (or `medswin data prepare-x2s`) turns every labelled CT of a dataset folder into
        two views, the view-aligned label, PNG pictures, the geometry, and a `datasets.yaml` entry to
        train with. Here: 8 training phantoms and 2 held-out ones.
        """
    ),
    code(
        """
        from medswin.data.biplanar import prepare_biplanar
        from medswin.data.spec import load_dataset_specs, parse_spec
        from medswin.data.synthetic import write_synthetic_dataset

        LABELS = {"background": 0, "L1": 1, "L2": 2, "L3": 3, "L4": 4}
        ct_spec = parse_spec("spine-ct", {
            "description": "synthetic spine CT phantoms", "channel_names": ["CT"], "labels": LABELS,
            "file_ending": ".nii.gz", "layout": "decathlon", "target_spacing": [2, 2, 2],
            "normalization": {"type": "ct", "a_min": -1000, "a_max": 1000}, "roi_size": [64, 64, 64],
            "licence": "synthetic", "source": "medswin.data.synthetic.make_spine_phantom",
        })
        folders = {}
        for split, seeds in (("train", range(8)), ("test", range(1000, 1002))):
            ct_root = write_synthetic_dataset(work / f"ct_{split}", "decathlon", [make_spine_phantom((48, 48, 64), seed=s) for s in seeds],
                                              channel_names=["CT"], labels=LABELS)
            folders[split] = prepare_biplanar(ct_root, work / f"x2s_{split}", ct_spec, height=64, width=64, name="spine-x2s")
        spec_file = folders["train"] / "datasets.yaml"
        spec = load_dataset_specs([spec_file])["spine-x2s"]
        print(spec_file.read_text())
        print(sorted(p.name for p in (folders["train"] / "imagesTr").iterdir())[:4], "...")
        """
    ),
    md(
        """
        ## 3. Train Swin-X2S

        One network for both views (shared weights): a 2D Swin encoder per view, dimension expansion
        to 3D, cross-view attention at the bottleneck, a 3D decoder. Loss per view: DiceCE plus a KL term
        pulling the two views' predictions together. The same `Trainer` as for 3D models.
        """
    ),
    code(
        """
        from medswin.training import TrainConfig, Trainer

        config = TrainConfig(
            model="swin_x2s_tiny", dataset="spine-x2s", datasets_files=[str(spec_file)], data=str(folders["train"]),
            out=str(work / "run"), epochs=3, iterations_per_epoch=10, batch_size=1, lr=1e-3, val_every=0, val_cases=[],
            seed=0,
        )
        summary = Trainer(config, spec=spec).fit()
        print(f"{summary['steps']} steps in {summary['seconds']:.0f} s")
        """
    ),
    md(
        """
        ## 4. 3D labels from two views

        `BiplanarPredictor` reads the two views (2D NIfTI, or PNG/JPEG X-ray pictures with the superior
        side up), averages the two views' logits and writes the label volume with the view-aligned
        grid's affine when the DRR geometry is found next to the views.
        """
    ),
    code(
        """
        from medswin.inference import BiplanarPredictor

        predictor = BiplanarPredictor.from_checkpoint(work / "run" / "checkpoint_last.pt")
        test = json.loads((folders["test"] / "dataset.json").read_text())["training"]
        for item in test:
            predictor.predict_file(folders["test"] / item["image_coronal"], folders["test"] / item["image_sagittal"],
                                   work / "predictions" / f"{item['case']}.nii.gz")

        case = test[0]["case"]
        from_png = predictor.predict(folders["test"] / "png" / f"{case}_coronal.png", folders["test"] / "png" / f"{case}_sagittal.png")
        from_nifti = load_volume(work / "predictions" / f"{case}.nii.gz").array[0]
        print(f"{case}: label volume {from_png.shape}; the 8-bit PNG views agree with the NIfTI views on "
              f"{(from_png == from_nifti).mean():.1%} of the voxels")
        assert from_png.shape == (64, 64, 64)
        """
    ),
    code(
        """
        fig = Figure(figsize=(12, 3.4 * len(test)))
        axes = fig.subplots(len(test), 4, squeeze=False)
        for row, item in zip(axes, test):
            truth = load_volume(folders["test"] / item["label"]).array[0]
            pred = load_volume(work / "predictions" / f"{item['case']}.nii.gz").array[0]
            coronal = load_view(folders["test"] / item["image_coronal"])  # (H, W) in [0, 1]
            spine_y = int(np.argmax((truth > 0).sum(axis=(0, 2))))
            panels = [(None, "coronal view (the input)"), (truth.max(axis=1), "truth, projected"),
                      (pred.max(axis=1), "prediction, projected"), (pred[:, spine_y, :], f"prediction, slice y = {spine_y}")]
            for ax, (labels_xz, title) in zip(row, panels):
                ax.imshow(view_to_radiograph(coronal), cmap="gray")
                if labels_xz is not None:
                    vertebrae(ax, labels_xz)
                ax.set_title(f"{item['case']}: {title}", fontsize=9)
                ax.set_axis_off()
        fig.tight_layout()
        fig
        """
    ),
    md(
        """
        ## 5. Evaluate

        Dice and HD95 per vertebra, plus the Swin-X2S metrics: the distance between predicted and true
        centroids (mm) and the identification rate (centroid within 20 mm).
        """
    ),
    code(
        """
        from medswin.evaluation import evaluate_pairs, markdown_table, match_cases, summarize

        rows = evaluate_pairs(match_cases(work / "predictions", folders["test"] / "labelsTr"), spec)
        assert len(rows) == 2 * 4 and all(0 <= row["dice"] <= 1 for row in rows)
        display(Markdown(markdown_table(summarize(rows, spec), centroids=True)))
        """
    ),
    md(
        """
        ## From the command line

        ```bash
        medswin data prepare-x2s ct_dataset/ --dataset spine-ct --datasets spine.yaml -o x2s/ --size 64 64
        medswin train --dataset spine-ct-x2s --datasets x2s/datasets.yaml --data x2s --model swin_x2s_tiny --out run
        medswin predict --model run/checkpoint_last.pt -i coronal.png -i2 sagittal.png -o labels.nii.gz
        ```
        """
    ),
]


# ---------------------------------------------------------------------------------------------
# 03: pretrain, then fine-tune
# ---------------------------------------------------------------------------------------------

PRETRAIN_THEN_FINETUNE: list[Cell] = [
    md(
        """
        # 03 - Self-supervised pretraining, then fine-tuning with few labels

        What this shows: unlabeled volumes -> the Swin UNETR pretext tasks (inpainting, rotation,
        contrastive coding) on a model's encoder -> `encoder.pt` -> two fine-tuning runs with the same small
        label budget and schedule, one from random weights and one from the pretrained encoder -> Dice of both.

        **Data: real.** The `mni-tissue` demo task (MNI ICBM152 2009a template, from the nilearn wheel; nothing
        is downloaded). Unlabeled set: the training slab and three randomly augmented copies of it; label
        budget: 32 axial slices of the training slab; test: the held-out superior slab.

        **Run time:** about 2-3 minutes on a 2-core CPU. Pretraining runs **20 steps** and each fine-tuning
        **20 steps**: the numbers below show the workflow, not the benefit of pretraining (the README reports
        the longer `benchmarks/ssl_vs_random.py` run, whatever it found).
        """
    ),
    setup(
        "medswin_ssl_",
        third_party=("from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandBiasField",),
    ),
    md(
        """
        ## 1. Unlabeled volumes

        Pretraining needs only images: any folder of NIfTI / NRRD / MHA files or DICOM series (searched
        recursively). Here the training slab and three copies with a random affine, a bias field and a gamma
        change.
        """
    ),
    code(
        """
        from medswin.data.demo import build_mni_tissue
        from medswin.data.io import load_volume, write_nifti

        data = build_mni_tissue(work / "data")["2mm"]
        train_image = load_volume(data / "imagesTr" / "mni_inferior.nii.gz")
        arr = train_image.array.astype(np.float32)  # (1, X, Y, Z)
        augment = Compose([
            RandAffine(prob=1.0, rotate_range=(0.17, 0.17, 0.17), scale_range=(0.1, 0.1, 0.1), padding_mode="zeros"),
            RandBiasField(prob=1.0, coeff_range=(0.1, 0.3)),
            RandAdjustContrast(prob=1.0, gamma=(0.7, 1.5)),
        ])
        augment.set_random_state(seed=0)
        unlabeled = [arr[0]]
        for _ in range(3):
            copy = np.asarray(augment(torch.from_numpy(arr)))[0]
            copy[arr[0] == 0] = 0  # keep the skull-stripped background at 0
            unlabeled.append(np.clip(copy, 0, None))
        for i, volume in enumerate(unlabeled):
            write_nifti(volume, train_image.affine, work / "unlabeled" / f"scan{i}.nii.gz")
        print(sorted(p.name for p in (work / "unlabeled").iterdir()))

        fig = Figure(figsize=(12, 3.2))
        for ax, volume, title in zip(fig.subplots(1, 4), unlabeled, ["original", "copy 1", "copy 2", "copy 3"]):
            ax.imshow(volume[:, :, 30].T, cmap="gray", origin="lower")
            ax.set_title(f"unlabeled: {title}")
            ax.set_axis_off()
        fig.tight_layout()
        fig
        """
    ),
    md(
        """
        ## 2. Pretrain the encoder

        `PretrainTrainer` is the training loop of `Trainer` (AMP, schedule, exact resume, DDP, checkpoints)
        with an `SSLModel`: the registered model's encoder plus one head per task. Each step draws two
        rotated, cut-out views of every crop; the losses are summed (`awl=True` learns their weights).
        The command line equivalent: `medswin pretrain --model swin_unetr_tiny --data unlabeled/ --tasks
        inpaint,rotate,contrast --roi 64 64 32`.
        """
    ),
    code(
        """
        import csv

        from medswin.ssl import PretrainConfig, PretrainTrainer

        pretrain = PretrainTrainer(PretrainConfig(
            model="swin_unetr_tiny", data=str(work / "unlabeled"), dataset="mni-tissue", out=str(work / "pretrain"),
            tasks=["inpaint", "rotate", "contrast"], roi_size=[64, 64, 32], num_samples=2, epochs=2,
            iterations_per_epoch=10, lr=1e-3, warmup_epochs=1, seed=0,
        ))
        pre = pretrain.fit()
        with open(work / "pretrain" / "metrics.csv", newline="") as f:
            history = list(csv.DictReader(f))
        print(f"{pre['steps']} steps; encoder weights in {pre['encoder']}")
        for row in history:
            print(f"epoch {row['epoch']}: " + ", ".join(f"{k} {float(v):.3f}" for k, v in row.items() if k.startswith("loss_")))
        display(Image(filename=str(work / "pretrain" / "curves.png")))
        """
    ),
    md(
        """
        ## 3. Fine-tune from random and from pretrained weights

        Same label budget (32 axial slices), same seed, same patches, same 20 steps; the only difference is
        `encoder_weights` (`medswin train --encoder-weights` on the command line), which logs how many keys it
        loaded and refuses weights of another encoder.
        """
    ),
    code(
        """
        from medswin.evaluation import evaluate_pairs, match_cases, summarize
        from medswin.inference import Predictor
        from medswin.training import TrainConfig, Trainer

        label = load_volume(data / "labelsTr" / "mni_inferior.nii.gz")
        start = (arr.shape[-1] - 32) // 2  # the central 32 axial slices are all the labels we use
        affine = train_image.affine.copy()
        affine[:3, 3] = (train_image.affine @ np.array([0, 0, start, 1.0]))[:3]
        case = {
            "case": "label_budget",
            "image": str(write_nifti(arr[0, :, :, start:start + 32], affine, work / "budget" / "image.nii.gz")),
            "label": str(write_nifti(label.array[0, :, :, start:start + 32].astype(np.uint8), affine, work / "budget" / "label.nii.gz")),
        }

        scores = {}
        for init, weights in (("random", None), ("pretrained", pre["encoder"])):
            config = TrainConfig(
                model="swin_unetr_tiny", dataset="mni-tissue", data=str(data), out=str(work / init), roi_size=[64, 64, 32],
                num_samples=2, lr=2e-3, epochs=2, iterations_per_epoch=10, val_every=0, seed=0, encoder_weights=weights,
            )
            Trainer(config, cases={"train": [case], "val": []}).fit()
            predictor = Predictor.from_checkpoint(work / init / "checkpoint_last.pt")
            predictor.predict_file(data / "imagesTs" / "mni_superior.nii.gz", work / init / "pred" / "mni_superior.nii.gz")
            summary = summarize(evaluate_pairs(match_cases(work / init / "pred", data / "labelsTs"), predictor.spec), predictor.spec)
            scores[init] = {name: summary["per_class"][name]["dice"]["mean"] for name in ("CSF", "GM", "WM")}

        lines = ["| init | CSF | GM | WM | mean |", "|---|---|---|---|---|"]
        for init, dice in scores.items():
            lines.append(f"| {init} | " + " | ".join(f"{v:.3f}" for v in dice.values()) + f" | {np.mean(list(dice.values())):.3f} |")
        display(Markdown("\\n".join(lines)))
        """
    ),
    code(
        """
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        x = np.arange(3)
        for i, (init, dice) in enumerate(scores.items()):
            ax.bar(x + 0.38 * i, list(dice.values()), width=0.38, label=f"{init} init")
        ax.set_xticks(x + 0.19, ["CSF", "GM", "WM"])
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice on the held-out slab")
        ax.set_title("20 fine-tuning steps, 32 labelled slices")
        ax.legend()
        fig.tight_layout()
        fig
        """
    ),
    md(
        """
        ## Other pretext tasks

        `tasks=["simmim"]` (masked image modelling: a learned mask token after the patch embedding, L1 on
        the masked voxels only) and `tasks=["barlow"]` (Barlow Twins) work on every 3D encoder, alone or
        combined; the encoder file loads into every model sharing that encoder (`create_model(name, ...,
        encoder_weights="encoder.pt")`) and MONAI's released `model_swinvit.pt` loads the same way.
        """
    ),
]


# ---------------------------------------------------------------------------------------------
# 04: test-time adaptation
# ---------------------------------------------------------------------------------------------

TEST_TIME_ADAPTATION: list[Cell] = [
    md(
        """
        # 04 - Test-time adaptation: a shifted scan, histogram matching against TENT and flip averaging

        What this shows: a model trained on one contrast meets a gamma-shifted scan; we predict it with no
        adaptation, with flip averaging, with histogram matching to the training image (the input-side
        correction the README's measurements recommend for a contrast change), with TENT and with ETTA (entropy
        minimisation on the encoder's normalisation affines), compare Dice, and check that `reset()` restores
        the model exactly.

        **Data: real.** The `mni-tissue` demo task (MNI ICBM152 2009a template, from the nilearn wheel); the
        shift (gamma 2.5) is applied here to the held-out superior slab.

        **Run time:** about 2 minutes on a 2-core CPU. The model is trained for **30 steps only** and each
        method adapts for one step on a few windows: a tour of the API (the README reports the
        `benchmarks/tta_shifts.py` table for the 5-minute demo model over five shifts).
        """
    ),
    setup("medswin_tta_", third_party=("from matplotlib.colors import ListedColormap",)),
    code(
        """
        from medswin.data.demo import build_mni_tissue
        from medswin.data.io import load_volume, write_nifti
        from medswin.training import TrainConfig, Trainer

        data = build_mni_tissue(work / "data")["2mm"]
        config = TrainConfig(
            model="swin_unetr_tiny", dataset="mni-tissue", data=str(data), out=str(work / "run"), roi_size=[64, 64, 32],
            num_samples=2, lr=2e-3, epochs=3, iterations_per_epoch=10, val_every=0, seed=0,
        )
        summary = Trainer(config).fit()
        checkpoint = work / "run" / "checkpoint_last.pt"
        print(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s")
        """
    ),
    md(
        """
        ## 1. A domain shift

        A gamma change of the T1 intensities (`AdjustContrast(gamma=2.5)`): the predictor's z-score cannot
        undo it. Voxels outside the skull-stripped brain stay 0.
        """
    ),
    code(
        """
        from monai.transforms import AdjustContrast

        image = load_volume(data / "imagesTs" / "mni_superior.nii.gz")
        truth = load_volume(data / "labelsTs" / "mni_superior.nii.gz")
        shifted = np.asarray(AdjustContrast(gamma=2.5)(torch.from_numpy(image.array.astype(np.float32))))
        shifted[image.array == 0] = 0
        shifted_path = write_nifti(shifted[0], image.affine, work / "shifted" / "mni_superior.nii.gz")

        fig = Figure(figsize=(7, 3.4))
        for ax, picture, title in zip(fig.subplots(1, 2), [image.array[0], shifted[0]], ["original", "gamma 2.5"]):
            ax.imshow(picture[:, :, 10].T, cmap="gray", origin="lower")
            ax.set_title(title)
            ax.set_axis_off()
        fig.tight_layout()
        fig
        """
    ),
    md(
        """
        ## 2. Five ways to predict the shifted scan

        Each method gets a fresh predictor from the checkpoint. `correction=InputCorrection("histmatch", ...)`
        maps each volume's foreground histogram onto the training image's before the z-score; `attach_adapter`
        makes the predictor adapt its model to every volume before predicting it, episodically (the weights are
        reset first). On the command line: `medswin predict ... --mirror`, `--adapt histmatch --reference
        TRAINING_IMAGE`, `--adapt tent`, `--adapt etta`.
        """
    ),
    code(
        """
        from medswin.adaptation import Etta, Tent
        from medswin.data.correction import InputCorrection
        from medswin.evaluation.metrics import case_metrics
        from medswin.inference import Predictor

        classes = {"CSF": 1, "GM": 2, "WM": 3}
        histmatch = InputCorrection("histmatch", data / "imagesTr" / "mni_inferior.nii.gz")
        results, labels, adapters = {}, {}, {}
        for method in ("none", "mirror", "histmatch", "tent", "etta"):
            correction = histmatch if method == "histmatch" else None
            predictor = Predictor.from_checkpoint(checkpoint, mirror=method == "mirror", correction=correction)
            if method == "tent":
                adapters[method] = Tent(predictor.model, steps=1, lr=1e-3, max_patches=4)
            elif method == "etta":
                adapters[method] = Etta(predictor.model, steps=1, lr=0.01, max_patches=4)
            if method in adapters:
                predictor.attach_adapter(adapters[method])
            t0 = time.perf_counter()
            labels[method] = predictor.predict(shifted_path).labels
            seconds = time.perf_counter() - t0
            metrics = case_metrics(labels[method], truth.array[0], truth.spacing, classes=classes)
            results[method] = {name: float(m["dice"]) for name, m in metrics.items()}
            extra = f", entropy before the step {adapters[method].last_report.losses}" if method in adapters else ""
            print(f"{method:>9}: {seconds:.1f} s{extra}")

        lines = ["| method | CSF | GM | WM | mean |", "|---|---|---|---|---|"]
        for method, dice in results.items():
            lines.append(f"| {method} | " + " | ".join(f"{v:.3f}" for v in dice.values()) + f" | {np.mean(list(dice.values())):.3f} |")
        display(Markdown("\\n".join(lines)))
        """
    ),
    code(
        """
        TISSUES = ListedColormap([(0, 0, 0, 0), (0.2, 0.6, 1.0, 0.6), (1.0, 0.35, 0.2, 0.6), (1.0, 0.9, 0.3, 0.6)])
        panels = [("truth", truth.array[0])] + [(m, labels[m]) for m in ("none", "mirror", "histmatch", "tent", "etta")]
        fig = Figure(figsize=(3 * len(panels), 3.4))
        for ax, (title, label_map) in zip(fig.subplots(1, len(panels)), panels):
            ax.imshow(shifted[0][:, :, 10].T, cmap="gray", origin="lower")
            ax.imshow(label_map[:, :, 10].T, cmap=TISSUES, vmin=0, vmax=3, origin="lower", interpolation="nearest")
            ax.set_title(title)
            ax.set_axis_off()
        fig.tight_layout()
        fig
        """
    ),
    md(
        """
        ## 3. What changed, and `reset()`

        Only the encoder's normalisation affines (LayerNorm weight and bias by default) were adapted; every
        other tensor is bit-identical. `reset()` restores them, and the optimizer state, exactly.
        """
    ),
    code(
        """
        tent = adapters["tent"]
        original = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
        now = tent.model.state_dict()
        changed = [k for k in original if not torch.equal(original[k], now[k])]
        print(f"{len(tent.parameter_names)} adapted tensors, e.g. {tent.parameter_names[:2]}; changed now: {len(changed)}")
        assert set(changed) <= set(tent.parameter_names)
        tent.reset()
        assert all(torch.equal(original[k], v) for k, v in tent.model.state_dict().items())
        print("after reset(): every tensor equals the checkpoint's")
        """
    ),
]


# ---------------------------------------------------------------------------------------------
# 06: bundles
# ---------------------------------------------------------------------------------------------

BUNDLES: list[Cell] = [
    md(
        """
        # 06 - MONAI bundles: run, evaluate, predict and export

        What this shows: the bundles shipped in `bundles/`, their metadata, and the `swin_unetr_mni_tissue`
        bundle trained, evaluated, run for inference and exported to TorchScript through MONAI's bundle
        machinery (`monai.bundle.run`, `ckpt_export`) -- what `python -m monai.bundle run` does in a research
        pipeline.

        **Data: real.** The `mni-tissue` demo task (MNI ICBM152 2009a template, from the nilearn wheel).

        **Run time:** about 1-2 minutes on a 2-core CPU. The bundle trains for **one epoch of 10 iterations**
        (its config says 35 epochs): the Dice below is that of a barely trained model.
        """
    ),
    setup(
        "medswin_bundles_",
        stdlib=("import csv", "import json"),
        third_party=("from matplotlib.colors import ListedColormap",),
    ),
    code(
        """
        from medswin.bundle import list_bundles, resolve_bundle

        for name in list_bundles():
            meta = json.loads((resolve_bundle(name) / "configs" / "metadata.json").read_text())
            net = meta["network_data_format"]
            print(f"{name:24s} v{meta['version']}  in {net['inputs']['image']['num_channels']} ch -> "
                  f"out {net['outputs']['pred']['num_channels']} ch  {meta['name']}")
        bundle = resolve_bundle("swin_unetr_mni_tissue")
        print(sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()))
        """
    ),
    md(
        """
        ## 1. Train, evaluate, infer

        `run_bundle` is `monai.bundle.run` on the bundle's configs with overrides; `bundle_root` points at a
        scratch folder so models and outputs land there, not in the repository. On the command line:
        `python -m monai.bundle run --config_file configs/train.json --dataset_dir DATA`.
        """
    ),
    code(
        """
        from medswin.bundle import run_bundle
        from medswin.data.demo import build_mni_tissue

        data = build_mni_tissue(work / "data")["2mm"]
        overrides = {"bundle_root": str(work / "bundle_run"), "dataset_dir": str(data), "num_workers": 0}
        t0 = time.perf_counter()
        run_bundle("swin_unetr_mni_tissue", "train", {**overrides, "max_epochs": 1, "epoch_length": 10, "val_interval": 1,
                                                       "num_samples": 2})
        print(f"trained in {time.perf_counter() - t0:.0f} s:", sorted(p.name for p in (work / "bundle_run" / "models").iterdir()))
        run_bundle("swin_unetr_mni_tissue", "evaluate", overrides)
        with open(work / "bundle_run" / "eval" / "val_mean_dice_raw.csv", newline="") as f:
            rows = list(csv.reader(f))
        print(rows[0])
        print(rows[1])
        run_bundle("swin_unetr_mni_tissue", "inference", overrides)
        print("inference output:", sorted(p.name for p in (work / "bundle_run" / "eval").glob("*.nii.gz")))
        """
    ),
    code(
        """
        from medswin.data.io import load_volume

        header, values = rows[0], [float(v) for v in rows[1][1:]]
        fig = Figure(figsize=(5, 3.2))
        ax = fig.subplots()
        ax.bar(header[1:], values)
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice")
        ax.set_title("bundle evaluate: held-out slab")
        fig.tight_layout()
        display(fig)

        image = load_volume(data / "imagesTs" / "mni_superior.nii.gz")
        pred = load_volume(work / "bundle_run" / "eval" / "mni_superior_seg.nii.gz")
        assert pred.array.shape == image.array.shape  # on the input's grid
        TISSUES = ListedColormap([(0, 0, 0, 0), (0.2, 0.6, 1.0, 0.6), (1.0, 0.35, 0.2, 0.6), (1.0, 0.9, 0.3, 0.6)])
        fig = Figure(figsize=(7, 3.4))
        for ax, z in zip(fig.subplots(1, 2), (5, 20)):
            ax.imshow(image.array[0][:, :, z].T, cmap="gray", origin="lower")
            ax.imshow(pred.array[0][:, :, z].T, cmap=TISSUES, vmin=0, vmax=3, origin="lower", interpolation="nearest")
            ax.set_title(f"bundle inference, z = {z}")
            ax.set_axis_off()
        fig.tight_layout()
        fig
        """
    ),
    md(
        """
        ## 2. Export to TorchScript and verify

        `export_bundle` runs MONAI's `ckpt_export` (tracing at the inference roi), reloads the file with
        `torch.jit.load` and compares it with the eager network. The exported model needs neither medswin nor
        MONAI to run.
        """
    ),
    code(
        """
        from medswin.bundle import export_bundle, verify_bundle

        ts_file = export_bundle("swin_unetr_mni_tissue", overrides={"bundle_root": str(work / "bundle_run")})
        scripted = torch.jit.load(str(ts_file))
        with torch.no_grad():
            out = scripted(torch.randn(1, 1, 64, 64, 32))
        print(ts_file.name, f"{ts_file.stat().st_size / 1e6:.1f} MB", "output", tuple(out.shape))
        for line in verify_bundle("swin_unetr_mni_tissue", overrides={"bundle_root": str(work / "bundle_run")}):
            print("verified:", line)
        """
    ),
]


NOTEBOOKS: dict[str, list[Cell]] = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_train_on_your_data.ipynb": TRAIN_ON_YOUR_DATA,
    "03_pretrain_then_finetune.ipynb": PRETRAIN_THEN_FINETUNE,
    "04_test_time_adaptation.ipynb": TEST_TIME_ADAPTATION,
    "05_swin_x2s.ipynb": SWIN_X2S,
    "06_bundles.ipynb": BUNDLES,
}


def build_notebook(name: str, cells: list[Cell]) -> nbformat.NotebookNode:
    """The notebook for ``cells``: no outputs, no execution counts, cell ids ``<stem>-NN`` (stable across builds)."""
    stem = name.split("_", 1)[0]
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        cell.id = f"nb{stem}-{index:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(name: str, cells: list[Cell]) -> str:
    """The file text of notebook ``name`` (nbformat's JSON, one trailing newline)."""
    return nbformat.writes(build_notebook(name, cells)) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) every notebook; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--check", action="store_true", help="compare the stored notebooks with this file; write nothing"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    args = parser.parse_args(argv)
    from medswin.data.atomic import write_text_atomic

    stale = []
    for name, cells in NOTEBOOKS.items():
        path = args.out / name
        text = render(name, cells)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run python notebooks/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
