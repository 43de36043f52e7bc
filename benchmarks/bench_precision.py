"""Training step time of each recipe's model in float32 and mixed bfloat16.

What `--mixed-precision auto` rests on for CPUs: for the model and batch of
each CPU recipe (`keras_unet.training.recipes`), the median time of a
training step (`train_on_batch`, Adam, the recipe's loss and crop size) in
float32 and in `mixed_bfloat16`, each case in its own process, the cases
interleaved round after round, and the speed-up. Random inputs: the step
time does not depend on the pixels. Accuracy is measured by the recipes'
own benchmarks (`bench_accuracy.py`, `bench_camvid.py`, with
`--set mixed_precision=...`).

    python benchmarks/bench_precision.py [--rounds 3] [--steps 10]
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_cases, median, save, step_case_arguments, table  # noqa: E402

RECIPES = ("nuclei-cpu", "street-cpu")
POLICIES = ("float32", "mixed_bfloat16")
# Output channels of each recipe's model: nuclei in instance mode (background,
# nucleus, boundary); CamVid's 11 classes.
OUTPUTS = {"nuclei-cpu": 3, "street-cpu": 11}


def case(recipe_name: str, policy: str, warmup: int, steps: int) -> float:
    """Median seconds of one training step, in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from keras_unet import build_unet, get_loss
    from keras_unet.training.recipes import recipe

    config = recipe(recipe_name)
    keras.mixed_precision.set_global_policy(policy)
    model = build_unet((None, None, config.get("channels", 3)), OUTPUTS[recipe_name],
                       **config["model"])
    model.compile(keras.optimizers.Adam(1e-3), get_loss(config.get("loss", "dice_ce")),
                  jit_compile=False)
    rng = np.random.default_rng(0)
    size, batch = config["crop_size"], config["batch_size"]
    x = rng.random((batch, size, size, 3), np.float32)
    y = rng.integers(0, OUTPUTS[recipe_name], (batch, size, size, 1)).astype(np.int32)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return median(times)


def main():
    args = step_case_arguments(__doc__)
    if args.case:
        print(json.dumps(case(*args.case, args.warmup, args.steps)))
        return

    seconds = interleaved_cases(__file__, [(r, p) for r in RECIPES for p in POLICIES], args)
    rows = []
    for recipe_name in RECIPES:
        base = median(seconds[recipe_name, "float32"])
        for policy in POLICIES:
            values = seconds[recipe_name, policy]
            rows.append({"recipe": recipe_name, "policy": policy,
                         "ms/step": round(median(values) * 1e3, 1),
                         "rounds": ", ".join(f"{v * 1e3:.0f}" for v in values),
                         "speed-up": round(base / median(values), 2)})
    print(table(rows, ["recipe", "policy", "ms/step", "rounds", "speed-up"]))
    print(save("precision", {"rounds": args.rounds, "steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
