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

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precision import case as step_seconds  # noqa: E402
from common import median, save, table  # noqa: E402

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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(*args.case, args.warmup, args.steps)))
        return

    cases = [(s, p) for p in ("float32", "mixed_bfloat16") for s in SETTINGS]
    seconds = {c: [] for c in cases}
    for round_ in range(args.rounds):
        for setting, policy in cases if round_ % 2 == 0 else reversed(cases):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                   "TF_ENABLE_ONEDNN_OPTS": "1" if SETTINGS[setting][2] else "0"}
            result = subprocess.run(
                [sys.executable, __file__, "--case", setting, policy, "--warmup",
                 str(args.warmup), "--steps", str(args.steps)],
                capture_output=True, text=True, check=True, env=env)
            seconds[setting, policy].append(json.loads(result.stdout.splitlines()[-1]))
            print(f"round {round_ + 1}: {policy} {setting} "
                  f"{seconds[setting, policy][-1] * 1e3:.0f} ms/step", flush=True)
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
