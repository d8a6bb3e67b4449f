"""The bad-input corpus (``tests/corpus.py``) through the CLI, in process: each bad input ends in exit code 2 and
ONE stderr line ``medswin <command>: error: ...`` naming the file (or config, or argument) and the problem, with no
traceback, nothing at the output path and the input's bytes unchanged (``medswin data check`` instead lists it and
exits 1); each odd but processable input is processed (exit 0) and its output checked.  The README's reliability
table is the corpus's own summary.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections import Counter
from pathlib import Path

import corpus
import pytest
import torch
from corpus import CASES, COMMANDS, KINDS, Case, Resources, markdown_table

from medswin.cli import main

REPO = Path(__file__).resolve().parents[1]
LOG_PREFIXES = ("INFO ", "WARNING ", "DEBUG ")


@pytest.fixture(scope="module")
def resources(tmp_path_factory) -> Resources:
    """The datasets.yaml with ``corpus-ct``, a medswin checkpoint of an untrained tiny model for it, the state dict
    of the mni-tissue bundle's tiny network, and another model's state dict (all untrained, seeded)."""
    import json

    from medswin.checkpoint import save_checkpoint
    from medswin.data.spec import parse_spec
    from medswin.models import create_model

    root = tmp_path_factory.mktemp("corpus-resources")
    spec_file = root / "datasets.yaml"
    spec_file.write_text(json.dumps(corpus.SPEC))
    spec = parse_spec("corpus-ct", dict(corpus.SPEC["corpus-ct"]))
    torch.manual_seed(0)
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=spec.out_channels)
    ckpt = save_checkpoint(
        {
            "model": model.state_dict(),
            "model_name": "swin_unetr_tiny",
            "model_kwargs": {},
            "in_channels": spec.num_channels,
            "out_channels": spec.out_channels,
            "roi_size": list(spec.roi_size),
            "spec": spec.to_dict(),
        },
        root / "checkpoint_best.pt",
    )
    bundle_state = root / "bundle_model.pt"
    torch.save(create_model("swin_unetr_tiny", in_channels=1, out_channels=4).state_dict(), bundle_state)
    other_state = root / "ds_transunet_tiny.pt"
    torch.save(create_model("ds_transunet_tiny", in_channels=1, out_channels=3).state_dict(), other_state)
    return Resources(spec_file=spec_file, ckpt=ckpt, bundle_state=bundle_state, other_state=other_state)


def _digest(path: Path) -> str:
    """Hash of a file, or of every file under a folder (names and bytes); symbolic links by their target."""
    h = hashlib.sha256()
    if not path.exists() and not path.is_symlink():
        return "absent"
    if path.is_symlink():
        h.update(str(Path(path).readlink()).encode())
        return h.hexdigest()
    if not path.is_dir():
        h.update(path.name.encode())
        h.update(path.read_bytes())
        return h.hexdigest()
    for f in sorted(path.rglob("*")):
        h.update(str(f.relative_to(path)).encode())
        if f.is_symlink():
            h.update(b"-> " + str(f.readlink()).encode())
        elif f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def _run(argv: list[str]) -> tuple[int, list[str]]:
    """``main(argv)`` as a process would run it: logging to stderr through ``main``'s own ``basicConfig`` (pytest's
    log capture set aside), Python's default warning filters; returns the exit code and the warnings, formatted
    as a process prints them.  Handlers the run attached to other loggers (MONAI's StatsHandler) are removed after
    it: they hold this test's captured streams."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    loggers = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    before = {id(lg): lg.handlers[:] for lg in loggers}
    root.handlers = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()  # Python's defaults, as in a fresh process
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse refusing an option
                code = int(exc.code or 0)
    finally:
        root.handlers, root.level = saved_handlers, saved_level
        for lg in [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]:
            lg.handlers = [h for h in lg.handlers if id(lg) in before and h in before[id(lg)]]
    printed = [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught]
    return code, printed


def _stderr_lines(err: str) -> list[str]:
    """Stderr lines that are not logging lines (tqdm bars end in a carriage return: the last state counts)."""
    lines = [line.split("\r")[-1].strip() for line in err.split("\n")]
    return [line for line in lines if line and not line.startswith(LOG_PREFIXES)]


def _params(expect: set[str]) -> list:
    return [
        pytest.param(
            c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=f"bug: {c.bug}")] if c.bug is not None else []
        )
        for c in CASES
        if c.expect in expect
    ]


@pytest.mark.parametrize("case", _params({"error", "report"}))
def test_bad_input(case: Case, tmp_path, resources, capsys, monkeypatch):
    run = case.build(tmp_path, resources)
    if run.patch is not None:
        run.patch(monkeypatch)
    before = [_digest(p) for p in run.inputs]
    capsys.readouterr()
    code, printed = _run(run.argv)
    out, err = capsys.readouterr()
    err = "\n".join([err, *printed])
    assert "Traceback" not in err + out, err + out
    if case.expect == "report":  # medswin data check: every problem listed, exit 1
        assert code == 1, (code, out, err)
        assert not _stderr_lines(err), err
        problems = [line for line in out.splitlines() if line.startswith("  - ")]
        assert any(run.named in p and all(f in p for f in run.expected) for p in problems), out
    else:
        lines = _stderr_lines(err)
        assert code == 2 and len(lines) == 1, (code, err)
        line = lines[0]
        words = case.command.split()
        assert line.startswith((f"medswin {words[0]}: error: ", f"medswin {case.command}: error: ")), line
        assert run.named is None or run.named in line, f"does not name {run.named}: {line}"
        for fragment in run.expected:
            assert fragment in line, f"{fragment!r} not in: {line}"
        assert "rerun with --verbose" not in line, line  # the unexpected-error (exit 1) form
    assert [_digest(p) for p in run.inputs] == before, "an input was changed"
    if run.output is not None:
        assert not run.output.exists(), f"{run.output} was written: {sorted(map(str, run.output.rglob('*')))}"


@pytest.mark.parametrize("case", _params({"ok"}))
def test_processable_input(case: Case, tmp_path, resources, capsys):
    run = case.build(tmp_path, resources)
    before = [_digest(p) for p in run.inputs]
    code, printed = _run(run.argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err + out
    assert [_digest(p) for p in run.inputs] == before, "an input was changed"
    run.check(run, out, "\n".join([err, *printed]))


def test_the_corpus_holds_80_distinct_bad_inputs_over_all_nine_commands():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    assert len({(c.command, c.title) for c in CASES}) == len(CASES), "two cases feed one command the same input"
    bad = [c for c in CASES if c.expect != "ok"]
    assert len(bad) >= 80
    per_command = Counter(c.command for c in bad)
    assert all(per_command[cmd] >= 3 for cmd in COMMANDS), per_command
    assert {c.kind for c in bad} == set(KINDS)
    processable = {c.title for c in CASES if c.expect == "ok"}
    for title in (
        "all-zero scan",
        "volume smaller than one window",
        "1-slice volume",
        "0.2 x 0.2 x 40 mm voxels",
        "int64 label maps",
        "constant image",
    ):
        assert title in processable, title


def test_readme_table_is_the_corpus_summary():
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- reliability:corpus -->\n(.*?)\n?<!-- /reliability:corpus -->", readme, re.DOTALL)
    if found is None:
        pytest.skip("README.md has no <!-- reliability:corpus --> ... <!-- /reliability:corpus --> section yet")
    assert found.group(1).strip() == markdown_table().strip(), "run: python tests/corpus.py (and paste the table)"
