"""Compute precision of a training run: the Keras dtype policy it builds with.

`TrainConfig.mixed_precision` (`--mixed-precision`) takes:

- `"auto"` (the default): float16 with a GPU, float32 on a CPU.
- `"off"`: float32 everywhere.
- `"float16"`: Keras' `mixed_float16` (float16 compute, float32 weights,
  loss scaling), the fast path of NVIDIA GPUs.
- `"bfloat16"`: `mixed_bfloat16` (no loss scaling needed: bfloat16 has
  float32's exponent range), for CPUs with bfloat16 instructions
  (AVX512_BF16 or AMX-BF16: recent Xeon and EPYC), TPUs and recent GPUs.
- `"on"`: the device's mixed type, float16 on a GPU and bfloat16 on a CPU.

Why `auto` keeps CPUs in float32 (`docs/benchmarks/speed.md`): on a 2-core
Xeon with AMX, bfloat16 trained the `nuclei-cpu` recipe's U-Net 1.67-1.85x
faster, but its DSB2018 mean AP was 0.007-0.009 below float32's (two seeds),
more than the 0.005 that `auto` may cost (measured with brightness/contrast
augmentation; without it bfloat16 scored 0.512 and 0.508 against float32's
0.504, one seed: not settled yet); and MobileNetV2 encoders train slower in
bfloat16 (0.76x: depthwise convolutions). On a CPU without
bfloat16 instructions it is emulated, and a run asking for it says so.

The weights stay float32 in every policy and the output head computes in
float32, so a mixed model saves, resumes and exports like a float32 one
(inference and export rebuild it in float32: `keras_unet.float32_copy`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "on", "off", "float16", "bfloat16")
# /proc/cpuinfo flags of the x86 instructions that compute in bfloat16.
CPU_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPU has bfloat16 instructions.

    Args:
        cpuinfo: The Linux CPU description to read (on other systems it is
            absent and the answer is `False`).

    Returns:
        `True` if its flags include AVX512_BF16 or AMX-BF16.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return any(flag in flags for flag in CPU_BFLOAT16_FLAGS)
    return False


def training_policy(setting: str, *, gpu: bool, cpu_bfloat16: bool | None = None) -> str:
    """The Keras dtype policy name for a `mixed_precision` setting.

    Logs a warning for bfloat16 on a CPU without bfloat16 instructions.

    Args:
        setting: One of `PRECISIONS`.
        gpu: Whether training runs on a GPU.
        cpu_bfloat16: Whether the CPU has bfloat16 instructions (default:
            `cpu_has_bfloat16()`).

    Returns:
        `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`.

    Raises:
        ValueError: For a setting not in `PRECISIONS`.
    """
    if setting not in PRECISIONS:
        raise ValueError(f"mixed_precision={setting!r}: expected one of {', '.join(PRECISIONS)}")
    if setting == "off" or (setting == "auto" and not gpu):
        return "float32"
    if setting in ("float16", "bfloat16"):
        policy = f"mixed_{setting}"
    else:
        policy = "mixed_float16" if gpu else "mixed_bfloat16"
    if policy == "mixed_bfloat16" and not gpu:
        if cpu_bfloat16 is None:
            cpu_bfloat16 = cpu_has_bfloat16()
        if not cpu_bfloat16:
            log.warning("this CPU has no bfloat16 instructions (AVX512_BF16, AMX): bfloat16 "
                        "is emulated and trains slower than float32 (--mixed-precision off)")
    return policy
