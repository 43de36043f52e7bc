"""TensorFlow's CPU settings against its defaults, for training a U-Net.

The `nuclei-cpu` recipe's model and batch (as in `bench_precision.py`), in
float32 and `mixed_bfloat16`, with TensorFlow's defaults (oneDNN on, as
many intra- and inter-op threads as cores) and with each alternative a user
would try: one inter-op thread (all cores to each op), one intra-op thread
per op and the cores across ops, and oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`,
TensorFlow's Eigen kernels). Each case in its own process, interleaved round
after round; the median training-step time and the ratio to the default.

    python benchmarks/bench_threads.py [--rounds 3] [--steps 10]
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precision import case as step_seconds  # noqa: E402
from common import interleaved_cases, median, save, step_case_arguments, table  # noqa: E402

RECIPE = "nuclei-cpu"
CORES = os.cpu_count() or 1
# name -> (intra-op threads, inter-op threads, oneDNN); None: TensorFlow's default
SETTINGS = {
    "default": (None, None, True),
    f"intra {CORES}, inter 1": (CORES, 1, True),
    f"intra 1, inter {CORES}": (1, CORES, True),
    "oneDNN off": (None, None, False),
}


def case(setting: str, policy: str, warmup: int, steps: int) -> float:
    """One case in this process (its environment set by the caller)."""
    import tensorflow as tf

    intra, inter, _ = SETTINGS[setting]
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    return step_seconds(RECIPE, policy, warmup, steps)


def main():
    args = step_case_arguments(__doc__)
    if args.case:
        print(json.dumps(case(*args.case, args.warmup, args.steps)))
        return

    cases = [(s, p) for p in ("float32", "mixed_bfloat16") for s in SETTINGS]
    seconds = interleaved_cases(__file__, cases, args, env=lambda c: {
        "TF_ENABLE_ONEDNN_OPTS": "1" if SETTINGS[c[0]][2] else "0"})
    rows = []
    for setting, policy in cases:
        base = median(seconds["default", policy])
        values = seconds[setting, policy]
        rows.append({"policy": policy, "setting": setting,
                     "ms/step": round(median(values) * 1e3, 1),
                     "rounds": ", ".join(f"{v * 1e3:.0f}" for v in values),
                     "vs default": round(median(values) / base, 2)})
    print(table(rows, ["policy", "setting", "ms/step", "rounds", "vs default"]))
    print(save("threads", {"recipe": RECIPE, "cores": CORES, "rounds": args.rounds,
                           "steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
