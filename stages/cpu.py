"""What this process may use of the CPU: its cores (``cpu_threads``) and native bfloat16 (``cpu_has_bf16``).

Shared by the model stages so that ``threads = 0`` means the same everywhere: the cores in this process's
affinity mask (``os.sched_getaffinity``), so a Ray actor pinned to one core runs one thread.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_threads(threads: int) -> int:
    """``threads``, or the cores this process may use when 0."""
    return threads or len(os.sched_getaffinity(0))


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split())


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16), from /proc/cpuinfo's flags."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def require_native_bf16(setting: str) -> None:
    """Refuse ``<setting> = "bf16"`` (a ConfigError naming it) on a CPU without native bfloat16."""
    if not cpu_has_bf16():
        from pipeline.errors import ConfigError

        raise ConfigError(f"{setting} = \"bf16\": this CPU has neither AVX512-BF16 nor AMX (no native bfloat16; "
                          "it would be slower and less exact): use fp32")


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    return next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "unknown CPU")
