"""What this CPU computes fast: its model, its vector-ISA class, native bf16 and its float32 peak.

The class is the one PyTorch and oneDNN will really use, so the limits a user (or a benchmark emulating
an older machine) sets are honoured: ``ONEDNN_MAX_CPU_ISA`` caps oneDNN's convolutions and matmuls,
``ATEN_CPU_CAPABILITY`` PyTorch's own kernels.  ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` on an
AVX-512 or AMX machine therefore reads as an (emulated) AVX2 one: no native bf16, 256-bit vectors.

Classes, slowest to fastest: ``"other"`` (no AVX2/FMA), ``"AVX2"``, ``"AVX-512"`` (``"AVX-512 BF16"``
when the CPU also has AVX512-BF16) and ``"AMX"``.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

ISA_ORDER = ("other", "AVX2", "AVX-512", "AMX")

# ONEDNN_MAX_CPU_ISA values (oneDNN's documented names) -> the class they cap at, and whether bf16 stays native
_ONEDNN_CAPS = {
    "SSE41": ("other", False),
    "AVX": ("other", False),
    "AVX2": ("AVX2", False),
    "AVX2_VNNI": ("AVX2", False),
    "AVX2_VNNI_2": ("AVX2", False),
    "AVX512_CORE": ("AVX-512", False),
    "AVX512_CORE_VNNI": ("AVX-512", False),
    "AVX512_CORE_BF16": ("AVX-512", True),
    "AVX512_CORE_FP16": ("AVX-512", True),
    "AVX10_1_512": ("AVX-512", True),
    "AVX512_CORE_AMX": ("AMX", True),
    "AVX10_1_512_AMX": ("AMX", True),
    "AVX512_CORE_AMX_FP16": ("AMX", True),
    "AVX10_1_512_AMX_FP16": ("AMX", True),
    "AVX10_2_512": ("AVX-512", True),
    "AVX10_2_512_AMX_2": ("AMX", True),
}
# torch.backends.cpu.get_cpu_capability() -> the class PyTorch's own kernels cap at
_ATEN_CAPS = {"DEFAULT": "other", "NO AVX": "other", "AVX": "other", "AVX2": "AVX2", "AVX512": "AMX"}


@dataclass(frozen=True)
class CpuInfo:
    """The processor as PyTorch will use it.

    Args:
        model: the model name (``/proc/cpuinfo``), e.g. ``"AMD EPYC 9B45"``.
        hardware_isa: the class the silicon supports (``"AVX2"``, ``"AVX-512"``, ``"AMX"``, ``"other"``).
        isa: the class in effect after ``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY``.
        native_bf16: bf16 matrix work runs natively (AVX512-BF16 or AMX, not capped away).
        cores: physical cores available to this process (SMT siblings share their FMA units).
        clock_ghz: the clock ``/proc/cpuinfo`` reports (nominal in most VMs; turbo is not counted).
        fma_units: 32-bit lanes' fused multiply-add issue width per core, in vectors of :attr:`vector_bits`.
        vector_bits: the vector width in effect (512 for AVX-512/AMX, 256 for AVX2, 128 otherwise).
    """

    model: str
    hardware_isa: str
    isa: str
    native_bf16: bool
    cores: int
    clock_ghz: float
    fma_units: int
    vector_bits: int

    @property
    def emulated(self) -> bool:
        """True when an environment limit makes this CPU act as an older class than it is."""
        return ISA_ORDER.index(self.isa) < ISA_ORDER.index(self.hardware_isa)

    @property
    def tag(self) -> str:
        """A file-name tag for the class: ``avx2``, ``avx512``, ``avx512-bf16``, ``amx`` (``-emulated`` when capped)."""
        label = "avx512-bf16" if self.isa == "AVX-512" and self.native_bf16 else self.isa.lower().replace("-", "")
        return f"{label}-emulated" if self.emulated else label

    @property
    def isa_label(self) -> str:
        """The class for tables: ``"AVX-512 BF16"`` for AVX-512 with native bf16, ``"... (emulated)"`` when capped."""
        label = "AVX-512 BF16" if self.isa == "AVX-512" and self.native_bf16 else self.isa
        return f"{label} (emulated on {self.hardware_isa})" if self.emulated else label

    def peak_fp32_gflops(self, threads: int | None = None) -> float:
        """float32 peak: cores x FMA units x lanes x 2 (multiply + add) x clock.

        Args:
            threads: compute threads in use (default: every core); at most :attr:`cores` count.
        """
        cores = self.cores if threads is None else max(1, min(threads, self.cores))
        return cores * self.fma_units * (self.vector_bits // 32) * 2 * self.clock_ghz

    def as_dict(self, threads: int | None = None) -> dict:
        """The fields, the label and the peak, for result JSON files."""
        return {
            "cpu_model": self.model,
            "isa": self.isa_label,
            "hardware_isa": self.hardware_isa,
            "native_bf16": self.native_bf16,
            "cores": self.cores,
            "clock_ghz": self.clock_ghz,
            "peak_fp32_gflops": round(self.peak_fp32_gflops(threads), 1),
        }


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _hardware_isa(flags: set[str]) -> str:
    if {"amx_bf16", "amx_tile"} <= flags:
        return "AMX"
    if "avx512f" in flags:
        return "AVX-512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    return "other"


def _capped(hardware: str, has_bf16: bool, onednn: str, aten: str) -> tuple[str, bool]:
    """The class and native bf16 once ``ONEDNN_MAX_CPU_ISA`` (``onednn``) and the ATen capability apply."""
    isa, bf16 = hardware, has_bf16
    cap = _ONEDNN_CAPS.get(onednn.strip().upper())
    if cap is not None:
        isa = min(isa, cap[0], key=ISA_ORDER.index)
        bf16 = bf16 and cap[1]
    aten_cap = _ATEN_CAPS.get(aten.strip().upper(), "AMX")
    isa = min(isa, aten_cap, key=ISA_ORDER.index)
    bf16 = bf16 and ISA_ORDER.index(aten_cap) >= ISA_ORDER.index("AVX-512")
    return isa, bf16


def _fma_units(vendor: str, family: int, model: int, isa: str) -> int:
    """FMA vectors issued per cycle per core at the width in effect.

    Intel cores since Haswell and AMD's Zen 2/3/5 issue two; Zen 1 splits every 256-bit FMA in two
    (one per cycle) and Zen 4 runs 512-bit FMAs on its 256-bit units in two passes (one per cycle).
    """
    if vendor == "AuthenticAMD":
        if family == 0x17 and model < 0x30 and isa == "AVX2":
            return 1  # Zen 1
        if family == 0x19 and isa in ("AVX-512", "AMX"):
            return 1  # Zen 4: double-pumped AVX-512
    return 2


def _physical_cores(fields: dict[str, str]) -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        siblings, cores = int(fields["siblings"]), int(fields["cpu cores"])
        per_core = max(1, siblings // max(cores, 1))
    except (KeyError, ValueError):
        per_core = 1
    return max(1, available // per_core)


def _clock_ghz(fields: dict[str, str]) -> float:
    try:
        return float(fields["cpu MHz"]) / 1000
    except (KeyError, ValueError):
        return 0.0


def _aten_capability() -> str:
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return os.environ.get("ATEN_CPU_CAPABILITY", "")


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's :class:`CpuInfo` (read once per process; the environment limits are read then too)."""
    fields = _cpuinfo_fields()
    flags = set(fields.get("flags", "").split())
    hardware = _hardware_isa(flags)
    # no x86 flags (ARM, macOS): PyTorch's own check decides
    has_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags if "flags" in fields else True
    isa, bf16 = _capped(hardware, has_bf16, os.environ.get("ONEDNN_MAX_CPU_ISA", ""), _aten_capability())
    try:
        family, model = int(fields.get("cpu family", "0")), int(fields.get("model", "0"))
    except ValueError:
        family, model = 0, 0
    return CpuInfo(
        model=cpu_model(),
        hardware_isa=hardware,
        isa=isa,
        native_bf16=bf16 and _torch_bf16_check(),
        cores=_physical_cores(fields),
        clock_ghz=_clock_ghz(fields),
        fma_units=_fma_units(fields.get("vendor_id", ""), family, model, isa),
        vector_bits={"AMX": 512, "AVX-512": 512, "AVX2": 256}.get(isa, 128),
    )


def _torch_bf16_check() -> bool:
    """PyTorch's own test for oneDNN bf16 (it already honours ``ONEDNN_MAX_CPU_ISA=AVX2``)."""
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def cpu_has_fast_bf16() -> bool:
    """True when this CPU runs bf16 matrix work natively (AVX512-BF16 or AMX) and no limit caps it off."""
    return cpu_info().native_bf16


@functools.cache
def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``, else ``platform.processor()``), e.g. ``"AMD EPYC 9B45"``."""
    name = _cpuinfo_fields().get("model name", "")
    return name or platform.processor() or platform.machine() or "this CPU"
