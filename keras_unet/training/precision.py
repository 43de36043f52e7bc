"""Compute precision of a training run: the Keras dtype policy it builds with.

`TrainConfig.mixed_precision` (`--mixed-precision`) takes:

- `"auto"` (the default): float16 with a GPU; on a CPU, bfloat16 for a
  plain U-Net (no `backbone`) where the CPU has bfloat16 instructions,
  else float32.
- `"off"`: float32 everywhere.
- `"float16"`: Keras' `mixed_float16` (float16 compute, float32 weights,
  loss scaling), the fast path of NVIDIA GPUs.
- `"bfloat16"`: `mixed_bfloat16` (no loss scaling needed: bfloat16 has
  float32's exponent range), for CPUs with bfloat16 instructions
  (AVX512_BF16 or AMX-BF16: recent Xeon and EPYC), TPUs and recent GPUs.
- `"on"`: the device's mixed type, float16 on a GPU and bfloat16 on a CPU.

What `auto` picks on a CPU was measured (`docs/benchmarks/speed.md`): on a
2-core Xeon with AMX, bfloat16 trained the `nuclei-cpu` recipe's plain U-Net
1.67-1.85x faster, and its DSB2018 validation scores were within 0.005 of
float32's (two seeds each: mean AP 0.512 and 0.508 against 0.504 and 0.520,
fg Dice 0.915 and 0.912 against 0.911 and 0.915, image Dice 0.896 and 0.891
against 0.894 and 0.896), so `auto` uses it there. Encoders from Keras
Applications stay float32: MobileNetV2 trained slower in bfloat16 (0.76x:
depthwise convolutions, the `street-cpu` recipe), and so did EfficientNet-B0
(0.80x); the others were not measured. On a CPU without bfloat16
instructions it is emulated, and a run asking for it says so.

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


def training_policy(setting: str, *, gpu: bool, backbone: str | None = None,
                    cpu_bfloat16: bool | None = None) -> str:
    """The Keras dtype policy name for a `mixed_precision` setting.

    Logs a warning for bfloat16 on a CPU without bfloat16 instructions.

    Args:
        setting: One of `PRECISIONS`.
        gpu: Whether training runs on a GPU.
        backbone: The model's encoder backbone (`None`: the plain U-Net);
            `"auto"` on a CPU uses bfloat16 only for the plain U-Net.
        cpu_bfloat16: Whether the CPU has bfloat16 instructions (default:
            `cpu_has_bfloat16()`).

    Returns:
        `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`.

    Raises:
        ValueError: For a setting not in `PRECISIONS`.
    """
    if setting not in PRECISIONS:
        raise ValueError(f"mixed_precision={setting!r}: expected one of {', '.join(PRECISIONS)}")
    if setting == "off":
        return "float32"
    if not gpu and cpu_bfloat16 is None:
        cpu_bfloat16 = cpu_has_bfloat16()
    if setting == "auto" and not gpu:
        return "mixed_bfloat16" if cpu_bfloat16 and backbone is None else "float32"
    if setting in ("float16", "bfloat16"):
        policy = f"mixed_{setting}"
    else:
        policy = "mixed_float16" if gpu else "mixed_bfloat16"
    if policy == "mixed_bfloat16" and not gpu:
        if not cpu_bfloat16:
            log.warning("this CPU has no bfloat16 instructions (AVX512_BF16, AMX): bfloat16 "
                        "is emulated and trains slower than float32 (--mixed-precision off)")
    return policy
