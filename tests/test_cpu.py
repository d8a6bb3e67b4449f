"""The CPU description: ISA class, the environment's limits (the AVX2 emulation), native bf16, the fp32 peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medswin import cpu
from medswin.cpu import CpuInfo, _capped, _fma_units, _hardware_isa

AVX2_FLAGS = {"sse4_2", "avx", "avx2", "fma"}
AVX512_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512vl"}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (AVX2_FLAGS, "AVX2"),
        (AVX512_FLAGS, "AVX-512"),
        (AVX512_FLAGS | {"avx512_bf16"}, "AVX-512"),
        (AVX512_FLAGS | {"avx512_bf16", "amx_bf16", "amx_tile"}, "AMX"),
        ({"sse4_2", "avx"}, "other"),
    ],
)
def test_hardware_class_from_the_flags(flags, expected):
    assert _hardware_isa(flags) == expected


@pytest.mark.parametrize(
    ("hardware", "bf16", "onednn", "aten", "expected"),
    [
        ("AMX", True, "", "AVX512", ("AMX", True)),  # no limit
        ("AMX", True, "AVX2", "AVX2", ("AVX2", False)),  # the documented AVX2 emulation
        ("AMX", True, "avx2", "AVX512", ("AVX2", False)),  # oneDNN's cap alone (any case)
        ("AMX", True, "", "AVX2", ("AVX2", False)),  # ATen's cap alone: its bf16 kernels are not native
        ("AMX", True, "AVX512_CORE_BF16", "AVX512", ("AVX-512", True)),
        ("AMX", True, "AVX512_CORE", "AVX512", ("AVX-512", False)),  # no bf16 instructions below CORE_BF16
        ("AVX-512", True, "ALL", "AVX512", ("AVX-512", True)),
        ("AVX2", False, "AVX512_CORE_AMX", "AVX2", ("AVX2", False)),  # a cap never raises the class
        ("AVX-512", False, "", "DEFAULT", ("other", False)),
    ],
)
def test_environment_limits_cap_the_class_and_bf16(hardware, bf16, onednn, aten, expected):
    assert _capped(hardware, bf16, onednn, aten) == expected


@pytest.mark.parametrize(
    ("vendor", "family", "model", "isa", "units"),
    [
        ("GenuineIntel", 6, 143, "AMX", 2),  # Sapphire Rapids: two 512-bit FMAs
        ("GenuineIntel", 6, 79, "AVX2", 2),
        ("AuthenticAMD", 0x17, 0x01, "AVX2", 1),  # Zen 1: 256-bit FMAs in two halves
        ("AuthenticAMD", 0x17, 0x31, "AVX2", 2),  # Zen 2
        ("AuthenticAMD", 0x19, 0x01, "AVX2", 2),  # Zen 3
        ("AuthenticAMD", 0x19, 0x11, "AVX-512", 1),  # Zen 4: double-pumped AVX-512
        ("AuthenticAMD", 0x1A, 0x02, "AVX-512", 2),  # Zen 5: full-width AVX-512
    ],
)
def test_fma_units(vendor, family, model, isa, units):
    assert _fma_units(vendor, family, model, isa) == units


def test_peak_is_cores_times_fma_times_lanes_times_two_times_clock():
    info = CpuInfo("X", "AVX-512", "AVX2", False, cores=2, clock_ghz=2.5, fma_units=2, vector_bits=256)
    assert info.peak_fp32_gflops() == 2 * 2 * 8 * 2 * 2.5 == 160.0
    assert info.peak_fp32_gflops(threads=1) == 80.0 and info.peak_fp32_gflops(threads=8) == 160.0
    assert info.emulated and info.isa_label == "AVX2 (emulated on AVX-512)"
    native = CpuInfo("Y", "AVX-512", "AVX-512", True, cores=1, clock_ghz=2.0, fma_units=2, vector_bits=512)
    assert native.isa_label == "AVX-512 BF16" and not native.emulated and native.peak_fp32_gflops() == 128.0
    assert native.as_dict()["peak_fp32_gflops"] == 128.0 and native.as_dict()["isa"] == "AVX-512 BF16"


def _info_in_a_process(**env: str) -> dict:
    code = "import json; from medswin.cpu import cpu_info; i = cpu_info(); print(json.dumps(i.as_dict()))"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_the_avx2_emulation_is_seen_as_avx2_without_native_bf16():
    """What PyTorch itself reports under the limits is what medswin reports (checked on this machine)."""
    here = cpu.cpu_info()
    capped = _info_in_a_process(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    if cpu.ISA_ORDER.index(here.hardware_isa) < cpu.ISA_ORDER.index("AVX2"):
        pytest.skip("this CPU has no AVX2")
    assert capped["isa"].startswith("AVX2") and not capped["native_bf16"]
    assert capped["isa"] == ("AVX2" if here.hardware_isa == "AVX2" else f"AVX2 (emulated on {here.hardware_isa})")
    assert capped["hardware_isa"] == here.hardware_isa and capped["cpu_model"] == here.model


def test_auto_precision_is_fp32_and_bf16_warns_under_the_emulation():
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING);"
        "from medswin.amp import resolve_amp; print(resolve_amp('auto', 'cpu')); print(resolve_amp('bf16', 'cpu'))"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "torch.bfloat16"]
    warnings = [line for line in out.stderr.splitlines() if "amp bf16" in line]
    assert len(warnings) == 1 and "(AVX2" in warnings[0] and "about 16x slower than fp32" in warnings[0]
    assert cpu.cpu_model() in warnings[0]
