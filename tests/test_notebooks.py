"""The tutorial notebooks: stored without outputs, in sync with ``notebooks/build.py``, and each one
executed from top to bottom in a fresh kernel of this interpreter (nbclient) so none can rot.

A failing notebook reports the failing cell's index, its source and the error; a notebook over its
time budget reports the cell that was running.  The executed copy (with outputs) is kept in the
test's ``tmp_path`` for inspection.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [
    "01_quickstart.ipynb",
    "02_train_on_your_data.ipynb",
    "03_pretrain_then_finetune.ipynb",
    "04_test_time_adaptation.ipynb",
    "05_swin_x2s.ipynb",
    "06_bundles.ipynb",
]
# per notebook, kernel start included: each runs in 1-2.5 minutes on a quiet 2-core CPU; raise it on a busy machine
TIMEOUT_S = int(os.environ.get("MEDSWIN_NOTEBOOK_TIMEOUT", "400"))
THREADS = os.environ.get("MEDSWIN_NOTEBOOK_THREADS", "2")  # 1 is faster on a machine busy with other work
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("medswin_notebooks_build", NOTEBOOK_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment the kernel inherits: 2 threads, this checkout importable, scratch files and the
    kernel's connection file under ``tmp_path`` (never the user's home); returns the kernel's cwd."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, THREADS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for name in ("runtime", "scratch", "cwd"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))  # the notebooks' tempfile.mkdtemp() folders
    return tmp_path / "cwd"


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_every_notebook_is_generated_by_the_build_script():
    build = _build_script()
    assert [p.name for p in NOTEBOOKS] == EXPECTED == sorted(build.NOTEBOOKS)
    for path in NOTEBOOKS:
        assert path.read_text(encoding="utf-8") == build.render(path.name, build.NOTEBOOKS[path.name]), (
            f"{path.name} differs from notebooks/build.py: run python notebooks/build.py"
        )
    assert build.main(["--check"]) == 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebook_has_no_outputs_and_says_what_it_uses(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    cells = _code_cells(nb)
    assert len(cells) >= 5
    for cell in cells:
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {cell.id} is stored with outputs"
    intro = nb.cells[0]
    assert intro.cell_type == "markdown" and intro.source.startswith(f"# {path.name[:2]} - ")
    assert re.search(r"\*\*Data: (real|synthetic)\.\*\*", intro.source), (
        f"{path.name}: the first cell must name its data"
    )
    assert re.search(r"\*\*Run time:\*\* about [\d-]+ minutes? on a 2-core CPU", intro.source)
    # everything is written under a fresh temporary folder, never into the repository
    assert "tempfile.mkdtemp(" in cells[0].source and "%matplotlib inline" in cells[0].source


def test_kernel_is_this_interpreter_with_two_threads(kernel_env: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys, torch\nprint(sys.executable)\nprint(torch.get_num_threads())")]
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(kernel_env)}}).execute()
    executable, threads = nb.cells[0].outputs[0].text.split()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert threads == THREADS


def _failure(name: str, nb: nbformat.NotebookNode, index: int | None, what: str, saved: Path) -> str:
    if index is None:
        return f"{name}: {what} before any cell ran (executed copy: {saved})"
    cell = nb.cells[index]
    errors = [out for out in cell.get("outputs", []) if out.output_type == "error"]
    detail = ""
    if errors:
        err = errors[0]
        detail = f"\n--- error ---\n{ANSI.sub('', chr(10).join(err.traceback))}\n{err.ename}: {err.evalue}"
    return f"{name}: {what} in cell {index}\n--- source ---\n{cell.source}{detail}\n(executed copy: {saved})"


@pytest.mark.notebook
@pytest.mark.timeout(TIMEOUT_S + 120)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, kernel_env: Path, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    current: dict[str, int | None] = {"cell": None}
    deadline = time.monotonic() + TIMEOUT_S

    def on_cell_start(cell: nbformat.NotebookNode, cell_index: int) -> None:
        current["cell"] = cell_index

    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        startup_timeout=120,
        resources={"metadata": {"path": str(kernel_env)}},
        on_cell_start=on_cell_start,
    )
    saved = tmp_path / path.name
    t0 = time.monotonic()
    try:
        client.execute()
    except CellTimeoutError:
        nbformat.write(nb, saved)
        pytest.fail(_failure(path.name, nb, current["cell"], f"over the {TIMEOUT_S} s budget", saved), pytrace=False)
    except CellExecutionError:
        nbformat.write(nb, saved)
        pytest.fail(_failure(path.name, nb, current["cell"], "error", saved), pytrace=False)
    nbformat.write(nb, saved)
    print(f"{path.name}: {time.monotonic() - t0:.0f} s")
    cells = _code_cells(nb)
    assert all(cell.execution_count is not None for cell in cells)
    outputs = [out for cell in cells for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    pictures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(pictures) >= 2, f"{path.name} should show its pictures inline, got {len(pictures)}"
    assert not list((kernel_env).iterdir()), (
        "the notebook wrote into its working directory instead of its temporary folder"
    )
