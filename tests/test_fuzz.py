"""Mutation fuzzing of every reader (tests/fuzz.py): mutated inputs load or raise DataError, never anything else.

``make test`` runs the default 300 mutations (fixed seed, 10-20 s on 2 cores);
``MEDSWIN_FUZZ_N=2000 MEDSWIN_FUZZ_SEED=7 pytest tests/test_fuzz.py`` runs a longer or different one, and
``MEDSWIN_FUZZ_SUMMARY=fuzz.md`` also writes the Markdown summary there (``python tests/fuzz.py --table``
prints it without pytest).  Bugs the fuzzing found are reproduced below as strict xfails, each by its
``(format, seed, index)``: rebuild one with ``python tests/fuzz.py --repro FORMAT INDEX``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import fuzz
import pytest

SEED = fuzz.DEFAULT_SEED


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    """A work folder whose ``base/`` holds the valid inputs of every format for the default seed."""
    root = tmp_path_factory.mktemp("fuzz")
    fuzz.make_valid_files(root / "base", SEED)
    return root


def _digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


def test_plan_shares_the_mutations_between_the_formats():
    for n in (300, 2000, 45):
        jobs = fuzz.plan(n)
        assert len(jobs) == n == len(set(jobs))
        assert {f for f, _ in jobs} == set(fuzz.FORMATS)
    counts = {f: sum(1 for g, _ in fuzz.plan(300) if g == f) for f in fuzz.FORMATS}
    assert min(counts.values()) >= 20 and counts["ckpt"] >= 20, counts


def test_valid_inputs_load_to_their_kind_of_result(fuzz_root, tmp_path):
    from medswin.data.errors import DataError

    base = fuzz_root / "base"
    for fmt, names in fuzz.BASE_FILES.items():
        for name in names:
            path = base / name
            if fmt == "yaml":  # load_and_check reads the file it is given: a copy under the mutated name
                path = tmp_path / "datasets.yaml"
                path.write_bytes((base / name).read_bytes())
            try:
                outcome = fuzz.load_and_check(fmt, path)
            except DataError as exc:  # pragma: no cover - the message says which
                pytest.fail(f"valid {fmt} input {name} refused: {exc}")
            assert outcome == ("ok", None), (fmt, name, outcome)


def test_mutations_are_reproducible(fuzz_root, tmp_path):
    """Mutation ``index`` of a format is the same input on every run: ``(format, seed, index)`` is a reproducer."""
    base = fuzz_root / "base"
    for fmt in fuzz.FORMATS:
        for index in range(3):
            first, desc = fuzz.mutate(fmt, SEED, index, base, tmp_path / "a")
            again, desc_again = fuzz.mutate(fmt, SEED, index, base, tmp_path / "b")
            assert desc == desc_again and _digest(first) == _digest(again), (fmt, index, desc)


def test_valid_inputs_are_the_same_on_every_run(fuzz_root, tmp_path):
    again = fuzz.make_valid_files(tmp_path / "base", SEED)
    for names in fuzz.BASE_FILES.values():
        for name in names:
            assert _digest(again / name) == _digest(fuzz_root / "base" / name), name


def test_supervisor_records_hangs_and_crashes_and_carries_on(tmp_path):
    jobs = [("selftest-ok", 0), ("selftest-hang", 0), ("selftest-crash", 0), ("selftest-raise", 0), ("selftest-ok", 1)]
    results = fuzz.run_fuzz(jobs=jobs, seed=SEED, workdir=tmp_path, timeout=2.0)
    outcomes = [r["outcome"] for r in results]
    assert outcomes[0] == outcomes[4] == "ok"
    assert outcomes[1].startswith("hang") and 2.0 <= results[1]["seconds"] < 10
    assert outcomes[2] == "crash: SIGSEGV" and "Segmentation fault" in results[2]["stderr"]
    assert outcomes[3].startswith("KeyError") and "fuzz.py" in results[3]["where"]
    assert [fuzz.acceptable(r) for r in results] == [True, False, False, False, True]
    table = fuzz.markdown_table(fuzz.fuzz_summary_rows([{**r, "format": "yaml"} for r in results]))
    assert "| `datasets.yaml` | 5 | 2 | 0 | 3 (hang 1, crash 1, KeyError 1) |" in table


def test_problem_words_group_data_errors():
    assert fuzz.problem_words("header declares 12x10x80 voxels (9.6e3)") == "header declares"
    assert fuzz.problem_words("entry 'ct': key 'labels': background must have value 0") == "key labels"
    assert fuzz.problem_words("cannot read the X-ray view (RuntimeError: ...)") == "cannot read the X-ray"
    assert fuzz.problem_words("not UTF-8 text (a binary file?)") == "not UTF-8 text"


@pytest.mark.slow
def test_mutated_inputs_load_or_raise_data_error(fuzz_root):
    """The fuzz itself: every mutation's outcome is ``ok`` or a ``DataError`` (no hang, crash, MemoryError or
    other exception), within 10 s each."""
    n, seed = fuzz.settings()
    start = time.monotonic()
    results = fuzz.run_fuzz(n, seed, workdir=fuzz_root)
    seconds = time.monotonic() - start
    assert len(results) == n
    summary = fuzz.markdown_table(fuzz.fuzz_summary_rows(results))
    summary += f"\n\n{n} mutations, seed {seed}, {seconds:.1f} s\n"
    summary += "".join(f"\n* {line}" for line in fuzz.notable(results))
    (fuzz_root / "fuzz_summary.md").write_text(summary)
    if os.environ.get("MEDSWIN_FUZZ_SUMMARY"):
        Path(os.environ["MEDSWIN_FUZZ_SUMMARY"]).write_text(summary)
    print("\n" + summary)
    table = fuzz.markdown_table(fuzz.fuzz_summary_rows(results))
    if (n, seed) == (fuzz.DEFAULT_N, fuzz.DEFAULT_SEED):  # the README shows this run
        readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
        found = re.search(r"<!-- reliability:fuzz -->\n(.*?)\n<!-- /reliability:fuzz -->", readme, re.DOTALL)
        assert found is not None, "README.md lacks the <!-- reliability:fuzz --> section"
        assert found.group(1).strip() == table.strip(), "README's fuzz table is stale: paste the table printed above"
    bad = [r for r in results if not fuzz.acceptable(r)]
    assert not bad, (
        f"{len(bad)} of {n} mutations broke the contract (python tests/fuzz.py --repro FORMAT INDEX --seed {seed}):\n"
        + ("\n".join(fuzz.describe(r) for r in bad))
    )


# ---------------------------------------------------------------------------------------------------------------
# bugs the fuzzing found (all fixed): each kept as a regression test, reproduced by its (format, seed, index);
# the reason says what went wrong before the fix
# ---------------------------------------------------------------------------------------------------------------


def _bug(fmt: str, index: int, reason: str, seed: int = SEED):
    return pytest.param(fmt, index, seed, id=f"{fmt}-{seed}-{index}")


IN_PROCESS_BUGS = [
    # NIfTI
    _bug(
        "nii",
        75,
        "vox_offset = inf: OverflowError (cannot convert float infinity to integer) from nibabel's "
        "get_data_offset in headers._check_nifti_length",
    ),
    _bug(
        "nii",
        209,
        "vox_offset = NaN: ValueError (cannot convert float NaN to integer) from nibabel's get_data_offset in "
        "headers._check_nifti_length",
    ),
    _bug(
        "nii.gz",
        122,
        "scl_inter = inf (scl_slope valid): nibabel HeaderDataError (Valid slope but invalid intercept inf) from "
        "get_slope_inter in headers._nifti_output_itemsize",
    ),
    # DICOM series (inspect_dicom_series converts the geometry elements unchecked)
    _bug(
        "dcm-series",
        8,
        "ImagePositionPatient with 6 numbers in slice 2693: ValueError (shapes (3,) and (6,) not aligned) at "
        "dicom.py np.dot(normal, ImagePositionPatient)",
    ),
    _bug(
        "dcm-series",
        31,
        "ImagePositionPatient with 1 number ('0') in slice 2693: TypeError (only 0-dimensional arrays can be "
        "converted to Python scalars) at dicom.py np.dot(normal, ImagePositionPatient)",
    ),
    _bug(
        "dcm-series",
        65,
        "ImagePositionPatient 'abc' in slice 2062: ValueError (could not convert string to float) at dicom.py "
        "np.asarray(ds.ImagePositionPatient, dtype=np.float64)",
    ),
    _bug(
        "dcm-series",
        17,
        "PixelData length set to 0 in slice 2693: TypeError (object of type 'NoneType' has no len()) at dicom.py "
        "_check_slice len(ds.PixelData)",
        seed=7,
    ),
    _bug(
        "dcm-series",
        77,
        "two bit flips turn the VR of ImagePositionPatient into 'DW' in slice 2693: pydicom NotImplementedError "
        "(Unknown Value Representation 'DW' in tag (0020,0032)) when dicom.py reads ds.ImagePositionPatient",
        seed=7,
    ),
    _bug(
        "dcm-series",
        147,
        "ImageOrientationPatient 'abc' in slice 2693: ValueError (could not convert string to float) in "
        "dicom._check_slice np.asarray(ds.ImageOrientationPatient, dtype=np.float64)",
    ),
    # datasets.yaml
    _bug(
        "yaml",
        68,
        "channel_suffixes given a list ([1.5, 1.5, 2.0]): TypeError (cannot convert dictionary update sequence "
        "element #0 to a sequence) from dict(entry.get('channel_suffixes')) in parse_spec",
    ),
    _bug(
        "yaml", 206, "regions: 3 (not a mapping): AttributeError ('int' object has no attribute 'items') in parse_spec"
    ),
    _bug(
        "yaml",
        836,
        "roi_size: [.inf, 1, 1]: OverflowError (cannot convert float infinity to integer) in spec._triple, which "
        "catches TypeError/ValueError only",
    ),
    _bug(
        "yaml",
        185,
        "a value nested 3000 lists deep: RecursionError from yaml.safe_load in spec._read_yaml, which catches "
        "yaml.YAMLError only",
    ),
    # checkpoints (model_from_checkpoint catches KeyError/TypeError/ValueError around the rebuild, RuntimeError
    # around load_state_dict)
    _bug(
        "ckpt",
        20,
        "'model' is a list of tensors: TypeError (Expected state_dict to be dict-like) from load_state_dict in "
        "model_from_checkpoint",
    ),
    _bug(
        "ckpt",
        42,
        "a state dict with an int key: AttributeError ('int' object has no attribute 'startswith') from "
        "load_state_dict in model_from_checkpoint",
    ),
    _bug(
        "ckpt",
        55,
        "out_channels = -1: RuntimeError (Trying to create tensor with negative dimension -1) from create_model in "
        "model_from_checkpoint",
    ),
    _bug(
        "ckpt",
        90,
        "out_channels = 2**40: RuntimeError (DefaultCPUAllocator: can't allocate memory: 52776558133248 bytes) "
        "from create_model in model_from_checkpoint",
    ),
    _bug(
        "ckpt",
        139,
        "spec.entry.regions = '.nii' (a string): AttributeError ('str' object has no attribute 'items') from "
        "parse_spec, through model_from_checkpoint",
    ),
]
"""Bugs that raised a Python exception (fixed): reproduced in this process."""

ISOLATED_BUGS = {
    ("mha", 73): "MetaImage header 'NDims = -1': SimpleITK segfaults in ImageFileReader.ReadImageInformation "
    "(io.SimpleITKReader._read_file); NDims = -2, 1000000 or 2147483648 segfault too and NDims = 100 aborts "
    "(glibc: corrupted size vs. prev_size): check NDims (1-10) in the text header before SimpleITK reads it",
    ("yaml", 174): "file_ending: a 9-level 'billion laughs' alias list (441 characters of YAML): the DatasetSpecError "
    "message formats it with !r, which expands 9**9 items: a hang (and gigabytes)",
    ("yaml", 175): "source: a 9-level 'billion laughs' alias list: parse_spec accepts it and str() expands 9**9 "
    "items: a hang (and gigabytes)",
}
"""Bugs that crashed or hung the process (fixed): reproduced together in worker subprocesses."""
ISOLATED_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def valid_files(fuzz_root):
    """``valid_files(seed)``: the folder of the valid inputs for ``seed`` (made once per seed)."""

    def folder(seed: int) -> Path:
        return fuzz.make_valid_files(fuzz_root / ("base" if seed == SEED else f"base-{seed}"), seed)

    return folder


@pytest.mark.parametrize(("fmt", "index", "seed"), IN_PROCESS_BUGS)
def test_fuzz_finding(fmt, index, seed, valid_files, tmp_path):
    result = fuzz.run_one(fmt, index, seed, valid_files(seed), tmp_path / "scratch")
    assert fuzz.acceptable(result), fuzz.describe(result)


@pytest.fixture(scope="module")
def isolated_findings(fuzz_root):
    """Every isolated bug run once, in worker subprocesses (one restart per crash or hang)."""
    jobs = list(ISOLATED_BUGS)
    results = fuzz.run_fuzz(jobs=jobs, seed=SEED, workdir=fuzz_root, timeout=ISOLATED_TIMEOUT_S)
    return dict(zip(jobs, results))


@pytest.mark.parametrize(
    ("fmt", "index"),
    [pytest.param(*job, id=f"{job[0]}-{SEED}-{job[1]}") for job in ISOLATED_BUGS],
)
def test_fuzz_finding_isolated(fmt, index, isolated_findings):
    result = isolated_findings[(fmt, index)]
    assert fuzz.acceptable(result), fuzz.describe(result)
