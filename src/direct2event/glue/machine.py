"""The machine a result was measured on, named the same way by every benchmark and study.

A step's speed depends on the CPU model and its widest vector units, so a result file names the
CPU model, its vector units, its cores and the torch build, and results live one file per
benchmark and machine: ``benchmarks/results/<benchmark>/<machine slug>.json``.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "benchmarks" / "results"

# the widest vector unit first: what sets a CPU's speed on this project's steps
ISA_FLAGS = (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimd", "NEON"))


def _cpuinfo() -> tuple[str, set[str]]:
    """The CPU's model name and flags (Linux); the platform's names elsewhere."""
    path = Path("/proc/cpuinfo")
    model, flags = platform.processor() or platform.machine(), set()
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == (
                platform.processor() or platform.machine()
            ):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    return model, flags


def vector_units() -> str:
    """The widest vector unit the CPU has (``AMX``, ``AVX-512``, ``AVX2``, ``NEON``)."""
    _, flags = _cpuinfo()
    return next((name for flag, name in ISA_FLAGS if flag in flags), "scalar")


def machine_name() -> str:
    """E.g. ``Intel(R) Xeon(R) Processor (AMX), 2 cores`` (and the GPU when there is one)."""
    model, _ = _cpuinfo()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{model} ({vector_units()}), {os.cpu_count()} cores{gpu}"


def torch_build() -> str:
    """E.g. ``2.13.0+cpu`` (with the CUDA version when built for it)."""
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    return f"{torch.__version__}{cuda}"


def machine_slug() -> str:
    """A file name for this machine, e.g. ``intel-xeon-amx-2cores``: vendor, family, vector
    units and cores (GPU name when one is used)."""
    model, _ = _cpuinfo()
    words = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*", " ", model.lower())
    kept = [w for w in re.split(r"[^a-z0-9]+", words) if w][:3] or [platform.machine().lower()]
    parts = [*kept, vector_units().lower().replace("-", ""), f"{os.cpu_count()}cores"]
    if torch.cuda.is_available():
        parts.append(re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()))
    return "-".join(parts)


def result_path(benchmark: str, root: Path = RESULTS) -> Path:
    """Where ``benchmark``'s result for this machine lives (one file per benchmark and
    machine; a rerun on the same machine replaces it)."""
    return root / benchmark / f"{machine_slug()}.json"
