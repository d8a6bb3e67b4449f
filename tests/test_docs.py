"""The docs are code: every ``medswin`` command the README and the bundles' docs show parses with the real CLI,
every name the README's Python snippets import exists, the model table is the registry's, and the import
graph the README's Architecture section states is the one the package has (no cycles)."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from medswin.cli import build_parser
from medswin.models import list_models, model_info

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted(ROOT.glob("bundles/*/docs/README.md"))]


def _blocks(path: Path, language: str) -> list[str]:
    """The fenced code blocks of ``language`` (``""``: blocks without one) in a Markdown file."""
    blocks, current, kind = [], None, None
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, kind = [], line[3:].strip()
            else:
                if kind == language:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _medswin_commands(path: Path) -> list[list[str]]:
    """Every ``medswin ...`` command (also ``torchrun ... -m medswin ...``) of the bash blocks, as argv lists."""
    commands = []
    for block in _blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["medswin"]:
                commands.append(words[1:])
            elif "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["medswin"]:
                commands.append(words[words.index("-m") + 2 :])
    return commands


COMMANDS = [(path.relative_to(ROOT), argv) for path in DOCS for argv in _medswin_commands(path)]


def test_the_docs_show_commands_of_every_subcommand():
    shown = {argv[0] for _, argv in COMMANDS}
    assert shown >= {"models", "data", "train", "pretrain", "predict", "evaluate", "demo", "bundle"}
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[" ".join(a[:3]) for _, a in COMMANDS])
def test_every_documented_command_parses_with_the_real_cli(where, argv):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `medswin {' '.join(argv)}` does not parse")
    assert callable(args.func)


def test_every_name_the_readme_snippets_import_exists():
    statements = []
    for block in _blocks(README, "python"):
        tree = ast.parse(block)
        statements += [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert len(statements) >= 8
    for statement in statements:
        exec(statement, {})  # raises ImportError naming the missing module or name


def test_the_model_table_is_the_registry():
    rows = {}
    for line in README.read_text().splitlines():
        m = re.match(r"\| `(\w+)` \|[^|]*\| ([\d.]+)M \| (\d+) \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), int(m.group(3)), m.group(4).strip())
    assert sorted(rows) == list_models()
    for name, (params, divisor, roi) in rows.items():
        info = model_info(name, in_channels=1, out_channels=14)
        assert round(info["params"] / 1e6, 1) == params, name
        assert info["size_divisor"] == divisor, name
        volume = "x".join(map(str, info["default_roi"]))
        if info["kind"] == "biplanar":
            h, _, w = info["default_roi"]
            assert roi == f"{h}x{w} views -> {volume}", name
        else:
            d = info["default_roi"]
            assert roi == (f"{d[0]}^3" if len(set(d)) == 1 else volume), name


# ---------------------------------------------------------------------------------------------
# the import graph
# ---------------------------------------------------------------------------------------------


def _import_graph() -> dict[str, set[str]]:
    """``{top-level module or package of medswin: the ones it imports}``, function-level imports included."""
    pkg = ROOT / "medswin"
    edges: dict[str, set[str]] = {}
    for f in pkg.rglob("*.py"):
        rel = f.relative_to(pkg).parts
        source = rel[0].removesuffix(".py")
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(rel[:-1])[: len(rel) - node.level] if node.level > 1 else list(rel[:-1])
                parts = base + (node.module.split(".") if node.module else [])
                targets = [parts[0]] if parts else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medswin."):
                targets = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("medswin.")]
            for target in targets:
                if target not in (source, "__version__"):
                    edges.setdefault(source, set()).add(target)
    return edges


def _documented_graph() -> dict[str, set[str]]:
    block = next(b for b in _blocks(README, "") if "layers      ->" in b)
    graph = {}
    for line in block.splitlines():
        name, _, targets = line.partition("->")
        if name.strip() == "cli":
            continue
        names = re.sub(r"\([^)]*\)", "", targets)
        graph[name.strip()] = {t.strip() for t in names.split(",") if t.strip()}
    return graph


def test_the_readme_states_the_import_graph_the_package_has():
    actual = _import_graph()
    documented = _documented_graph()
    for module, targets in documented.items():
        assert actual.get(module, set()) == targets, (
            f"{module}: README says {sorted(targets)}, code has {sorted(actual.get(module, set()))}"
        )
    assert not any("cli" in targets for module, targets in actual.items() if module not in ("cli", "__main__"))


def test_no_import_cycles_and_inference_training_adaptation_in_one_direction():
    graph = _import_graph()
    for a, targets in graph.items():
        for b in targets:
            assert a not in graph.get(b, set()), f"import cycle between medswin/{a} and medswin/{b}"
    assert not graph["inference"] & {"training", "adaptation", "ssl", "bundle", "evaluation"}
    assert not graph["adaptation"] & {"training", "ssl"}
    assert not graph["training"] & {"adaptation"}
    assert "layers" not in graph and "data" not in graph  # the bottom of the stack imports nothing of medswin
    assert graph["models"] == {"layers"}


def test_the_formatter_is_configured_so_skips_are_rare():
    skips = sum(f.read_text().count("# fmt: skip") for f in (ROOT / "medswin").rglob("*.py"))
    assert skips < 10


def test_every_result_table_in_the_readme_is_rendered_from_its_json():
    """The README's measured tables sit between ``<!-- results: BENCHMARK FILE... -->`` markers and must equal
    what the benchmark's ``markdown_table`` renders from the committed JSON (``benchmarks/readme_tables.py``)."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import readme_tables

    found = readme_tables.blocks(README.read_text())
    specs = [spec for spec, _, _ in found]
    for benchmark in ("swin_unetr_vs_monai", "inference_vs_monai", "training_throughput", "models_table"):
        classes = {spec.split()[1].rsplit("_cpu-", 1)[-1] for spec in specs if spec.split()[0] == benchmark}
        assert len(classes) >= 2, f"{benchmark}: the README shows it for one CPU class only ({classes})"
    for spec, body, rendered in found:
        assert body == rendered, (
            f"README table 'results: {spec}' differs from its JSON: run benchmarks/readme_tables.py --write"
        )
