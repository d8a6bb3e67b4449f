"""The README's result tables, rendered from the JSON files in ``benchmarks/results/``.

Every measured table in the README sits between markers naming the benchmark that renders it and the result
files it comes from::

    <!-- results: inference_vs_monai inference_vs_monai_cpu-amx.json -->
    ...the table, exactly as ``inference_vs_monai.markdown_table(json)`` prints it...
    <!-- /results -->

``python benchmarks/readme_tables.py`` exits 1 naming every block that differs from its JSON (the docs test
runs it); ``--write`` re-renders them in place after a new measurement.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

BLOCK = re.compile(r"<!-- results: (?P<spec>[^>]*?) -->\n(?P<body>.*?)<!-- /results -->", re.S)
# benchmarks whose table combines several result files (one row each)
MULTI_FILE = {"demo_fresh_clone"}


def render(spec: str) -> str:
    """The table of one marker: ``BENCHMARK FILE [FILE ...]`` (files relative to ``benchmarks/results``).

    Args:
        spec: the marker's text after ``results:``.
    """
    benchmark, *files = spec.split()
    if not files:
        raise ValueError(f"README marker 'results: {spec}' names no result file")
    table = importlib.import_module(benchmark).markdown_table
    results = [json.loads((RESULTS / name).read_text()) for name in files]
    if benchmark in MULTI_FILE:
        return table(results)
    if len(results) != 1:
        raise ValueError(f"README marker 'results: {spec}': {benchmark} renders one result file")
    return table(results[0])


def blocks(text: str) -> list[tuple[str, str, str]]:
    """``(spec, body in the README, body rendered from the JSON)`` for every marked block of ``text``."""
    return [(m["spec"], m["body"], render(m["spec"]) + "\n") for m in BLOCK.finditer(text)]


def rewrite(text: str) -> str:
    """``text`` with every marked block re-rendered from its JSON files."""
    return BLOCK.sub(lambda m: f"<!-- results: {m['spec']} -->\n{render(m['spec'])}\n<!-- /results -->", text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="re-render the blocks in README.md")
    opts = p.parse_args(argv)
    text = README.read_text()
    if opts.write:
        README.write_text(rewrite(text))
        print(f"rendered {len(blocks(text))} tables in {README}")
        return 0
    stale = [spec for spec, body, rendered in blocks(text) if body != rendered]
    for spec in stale:
        print(
            f"README.md: the table of 'results: {spec}' differs from its JSON (run benchmarks/readme_tables.py --write)"
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
