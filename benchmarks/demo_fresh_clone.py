"""``make demo`` as a new user meets it: a fresh clone, the install, the demo; timed, with the demo's result.

Clones the committed HEAD of this repository into a scratch folder, runs ``make install`` (a new virtual
environment: torch, then the project and its extras) and ``make demo`` there, and writes the demo's
``demo.json`` (CPU model and ISA, the recipe chosen from the measured step time, steps, Dice) together with
both wall times to ``benchmarks/results/demo_<device tag>.json`` (``demo_cpu-avx2.json``, ``demo_cpu-amx.json``,
...).  The environment passes through, so the AVX2 emulation of an AVX-512 / AMX machine is measured with

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/demo_fresh_clone.py

and a slower machine with fewer threads (``OMP_NUM_THREADS=1``; the file name then ends in ``_1thread``).
``--table`` prints the README's demo table of earlier results (one row per CPU class).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _bench  # noqa: E402


def _timed(cmd: list[str], cwd: Path, log_path: Path) -> float:
    """Run ``cmd`` in ``cwd`` with its output in ``log_path``; its wall time in seconds (fails loudly)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {done.returncode}): see {log_path}")
    return time.perf_counter() - start


def measure(work: Path) -> dict:
    """Clone, install and run the demo in ``work``; the demo's JSON plus ``install_s`` and ``demo_s``."""
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    if dirty.strip():
        print("note: uncommitted changes are not part of the clone (it is the committed HEAD)", file=sys.stderr)
    clone = work / "medswin"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    install_s = _timed(["make", "install"], clone, work / "install.log")
    demo_s = _timed(["make", "demo"], clone, work / "demo.log")
    result = json.loads((clone / "demo_output" / "demo.json").read_text())
    threads = os.environ.get("OMP_NUM_THREADS")
    return {
        "benchmark": "demo_fresh_clone",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": commit,
        "device_name": _bench.cpu_name(),
        "threads": int(threads) if threads else os.cpu_count(),
        "install_s": round(install_s, 1),
        "demo_s": round(demo_s, 1),
        "total_s": round(install_s + demo_s, 1),
        **result,
    }


def markdown_table(results: list[dict]) -> str:
    """The README's demo table: one row per CPU class (and thread count)."""
    lines = [
        "| CPU (threads) | recipe | 1 step (probe) | steps in budget | install + demo | CSF Dice | GM Dice | WM Dice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        dice = {k: v["dice"]["mean"] for k, v in r["summary"]["per_class"].items()}
        recipe = f"{r['recipe']}: {r['num_samples']} x {'x'.join(map(str, r['roi_size']))}, lr {r['lr']:g}"
        skipped = f" ({r['skipped_steps']} skipped: non-finite gradients)" if r.get("skipped_steps") else ""
        lines.append(
            f"| {r['device_name']} ({r['threads']}) | {recipe} | {r['probe_seconds_per_step']:.2f} s "
            f"| {r['steps']} in {r['timings']['train_s']:.0f} s{skipped} | {r['install_s']:.0f} + {r['demo_s']:.0f} s "
            f"= **{r['total_s'] / 60:.1f} min** | {dice['CSF']:.3f} | {dice['GM']:.3f} | {dice['WM']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed afterwards)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/demo_<device tag>.json)")
    p.add_argument("--table", nargs="+", metavar="JSON", help="only print the table of earlier results")
    opts = p.parse_args(argv)
    if opts.table:
        print(markdown_table([json.loads(Path(path).read_text()) for path in opts.table]))
        return 0
    with tempfile.TemporaryDirectory(dir=opts.work) as work:
        result = measure(Path(work))
    threads = os.environ.get("OMP_NUM_THREADS")
    suffix = f"_{threads}thread" if threads and int(threads) < (os.cpu_count() or 1) else ""
    out = opts.out or _bench.RESULTS / f"demo_{_bench.device_tag('cpu')}{suffix}.json"
    path = _bench.write_json(result, out)
    print(markdown_table([result]) + f"\n\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
