"""Helpers shared by the inference and training benchmarks: machine description, memory probes,
one-measurement-per-subprocess runs, atomic JSON results and Dice agreement of label maps.

Every measurement runs in a fresh process so the peak RSS belongs to it alone; the worker prints one
JSON line as its last line of stdout.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu_name() -> str:
    """CPU model, core count and the ISA class in effect (``AVX2``, ``AVX-512``, ``AVX-512 BF16``, ``AMX``; marked
    ``(emulated on ...)`` under ``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` limits)."""
    from medswin.cpu import cpu_info

    info = cpu_info()
    return f"{info.model}, {info.cores} cores, {info.isa_label}"


def machine_info(device: str) -> dict:
    """What the numbers were measured on: device name, threads, library versions, memory, date."""
    import monai
    import torch

    from medswin.cpu import cpu_info

    info = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else cpu_name(),
        "threads": torch.get_num_threads(),
        **({} if device.startswith("cuda") else {"cpu": cpu_info().as_dict(torch.get_num_threads())}),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return info


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads (0 = leave torch's default)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def run_worker(script: str, args: list[str], timeout: float | None = None) -> dict:
    """Run ``script --worker ...`` in a fresh process and return the JSON of its last stdout line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, script, "--worker", *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"worker timed out after {timeout} s: {' '.join(args)}") from None
    if out.returncode != 0:
        raise RuntimeError(f"worker failed ({' '.join(args)}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def default_precisions(device: str) -> str:
    """``fp32,bf16`` where bf16 is native (CUDA, AVX512-BF16, AMX), ``fp32`` elsewhere: emulated bf16 is ~16x
    slower and measures the emulation, not the model."""
    from medswin.cpu import cpu_has_fast_bf16

    return "fp32,bf16" if not device.startswith("cpu") or cpu_has_fast_bf16() else "fp32"


def device_tag(device: str) -> str:
    """``cuda`` for a GPU; ``cpu-<class>`` on a CPU (``cpu-avx2``, ``cpu-avx512-bf16``, ``cpu-amx``,
    ``cpu-avx2-emulated`` under the AVX2 emulation): results of each CPU class are kept side by side."""
    if not device.startswith("cpu"):
        return device.split(":")[0]
    from medswin.cpu import cpu_info

    return f"cpu-{cpu_info().tag}"


def result_path(benchmark: str, device: str, quick: bool = False) -> Path:
    """``benchmarks/results/<benchmark>_<device tag>[_quick].json`` (see :func:`device_tag`)."""
    return RESULTS / f"{benchmark}_{device_tag(device)}{'_quick' if quick else ''}.json"


def write_json(result: dict, path: str | Path) -> Path:
    """Write ``result`` as indented JSON to ``path`` atomically (temp file + rename)."""
    from medswin.data.atomic import write_text_atomic

    return write_text_atomic(path, json.dumps(result, indent=2))


def dice_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Agreement of two label maps: mean Dice over the classes present in either, and voxel agreement."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    a, b = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    k = int(max(a.max(), b.max())) + 1
    inter = np.bincount(a[a == b], minlength=k)
    total = np.bincount(a, minlength=k) + np.bincount(b, minlength=k)
    present = total > 0
    dice = 2 * inter[present] / total[present]
    return {"mean_dice": float(dice.mean()), "min_dice": float(dice.min()), "voxel_agreement": float((a == b).mean())}


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"160"`` -> (160, 160, 160); ``"256x256x128"`` -> (256, 256, 128)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 1:
        raise ValueError(f"a volume size is one int or DxHxW, got {text!r}")
    return tuple(parts)  # type: ignore[return-value]


def fit_power(x: list[float], y: list[float]) -> float:
    """Least-squares exponent ``p`` of ``y ~ c * x**p`` (slope in log-log); NaN when ``x`` does not vary."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if np.ptp(lx) == 0:
        return float("nan")
    return float(np.polyfit(lx, ly, 1)[0])


def worker_or_table(opts, worker, table) -> bool:
    """The two side entries every benchmark script shares: ``--worker`` (run one measurement in this
    process and print its JSON for the parent) and ``--table JSON`` (print the tables of an earlier
    result).  Returns True when one of them ran, i.e. the script is done."""
    if opts.worker:
        print(json.dumps(worker(opts)))
        return True
    if opts.table:
        print(table(json.loads(Path(opts.table).read_text())))
        return True
    return False
