"""datasets.yaml: the built-in registry, user files, and validation errors that name entry and key."""

from __future__ import annotations

import pytest
import yaml

from medswin.data.spec import DatasetSpecError, get_dataset_spec, load_dataset_specs, parse_spec

BASE = {
    "description": "d",
    "channel_names": ["CT"],
    "labels": {"background": 0, "organ": 1},
    "file_ending": ".nii.gz",
    "layout": "flat",
    "target_spacing": [1, 1, 2],
    "normalization": {"type": "ct", "a_min": -100, "a_max": 200},
    "roi_size": [64, 64, 64],
    "licence": "CC0",
    "source": "here",
}


def test_builtin_registry_has_the_documented_entries():
    specs = load_dataset_specs()
    assert {"brats2021", "brats2023", "btcv", "msd_task01_braintumour", "msd_task09_spleen", "mni-tissue"} <= set(specs)
    btcv = specs["btcv"]
    assert btcv.num_channels == 1 and btcv.out_channels == 14 and btcv.target_spacing == (1.5, 1.5, 2.0)
    assert btcv.normalization["a_min"] == -175 and btcv.normalization["a_max"] == 250 and btcv.is_ct
    b21, b23 = specs["brats2021"], specs["brats2023"]
    assert b21.regions == {"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)} and b21.out_channels == 3
    assert b23.regions["ET"] == (3,) and b23.label_values == (0, 1, 2, 3)
    assert specs["mni-tissue"].output_names == ("background", "CSF", "GM", "WM")


def test_user_file_adds_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"my-liver": BASE, "btcv": {**BASE, "description": "my btcv"}}))
    specs = load_dataset_specs([path])
    assert specs["my-liver"].origin == str(path) and specs["btcv"].description == "my btcv"
    assert get_dataset_spec("my-liver", [path]).roi_size == (64, 64, 64)
    assert "&id" in path.read_text()  # safe_dump wrote the shared BASE values as aliases: they load


def test_aliases_that_expand_too_far_are_refused(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]  # 10**7 values
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(levels) + "\n")
    with pytest.raises(DatasetSpecError, match=r"laughs.yaml: its aliases \(&, \*\) expand to more than 1,000,000"):
        load_dataset_specs([path])
    (tmp_path / "loop.yaml").write_text("a: &a [1, *a]\n")
    with pytest.raises(DatasetSpecError, match="expand to more than"):
        load_dataset_specs([tmp_path / "loop.yaml"])


@pytest.mark.parametrize(
    "change,key,fragment",
    [
        ({"labels": {"organ": 1}}, "labels", "background must have value 0"),
        ({"labels": {"background": 0, "a": 1, "b": 1}}, "labels", "share a value"),
        ({"labels": {"background": 0, "a": -1}}, "labels", "non-negative integer"),
        ({"regions": {"TC": [7]}}, "regions", "not foreground label values"),
        ({"layout": "weird"}, "layout", "not one of"),
        ({"file_ending": ".png"}, "file_ending", "not one of"),
        ({"target_spacing": [1, 1]}, "target_spacing", "3 finite numbers"),
        ({"target_spacing": [1, 0, 1]}, "target_spacing", "positive"),
        ({"roi_size": [64, 64, 64.5]}, "roi_size", "whole numbers"),
        ({"normalization": {"type": "ct", "a_min": 300, "a_max": 200}}, "normalization", "below a_max"),
        ({"normalization": {"type": "minmax"}}, "normalization", "ct, zscore or none"),
        ({"channel_names": []}, "channel_names", "non-empty list"),
        ({"layout": "brats", "case_pattern": "X*"}, "channel_suffixes", "suffix"),
        ({"roi": [1, 2, 3]}, "roi", "unknown key"),
    ],
)
def test_validation_errors_name_entry_and_key(change, key, fragment):
    with pytest.raises(DatasetSpecError) as err:
        parse_spec("mine", {**BASE, **change}, "mine.yaml")
    msg = str(err.value)
    assert "mine.yaml" in msg and "'mine'" in msg and f"'{key}'" in msg and fragment in msg


def test_only_what_the_code_needs_is_required(tmp_path):
    minimal = {"channel_names": ["CT"], "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}
    spec = parse_spec("mine", minimal, "mine.yaml")
    assert spec.layout is None and spec.target_spacing is None and spec.roi_size is None and spec.licence == ""
    assert spec.normalization == {"type": "zscore", "nonzero": False, "channel_wise": True}
    assert spec.defaulted == ("target_spacing", "normalization", "roi_size") and not spec.uses_nonzero_mask
    assert parse_spec("mine", {**minimal, "license": "CC BY 4.0"}).licence == "CC BY 4.0"  # the US spelling too
    with pytest.raises(DatasetSpecError, match="'license': given together with 'licence'"):
        parse_spec("mine", {**minimal, "license": "a", "licence": "b"}, "mine.yaml")
    for key in ("channel_names", "labels", "file_ending"):
        entry = {k: v for k, v in minimal.items() if k != key}
        with pytest.raises(DatasetSpecError, match=rf"mine.yaml: entry 'mine': key '{key}': missing \(required keys"):
            parse_spec("mine", entry, "mine.yaml")
    again = type(spec).from_dict(spec.to_dict())
    assert again.defaulted == spec.defaulted and again.labels == spec.labels


def test_missing_key_and_bad_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mine: [unclosed")
    with pytest.raises(DatasetSpecError, match="bad.yaml: not valid YAML"):
        load_dataset_specs([bad])
    with pytest.raises(DatasetSpecError, match="unknown dataset 'nope'"):
        get_dataset_spec("nope")
