"""Training step time of each recipe's model in float32 and mixed bfloat16.

What `--mixed-precision auto` rests on for CPUs: for the model and batch of
each CPU recipe (`keras_unet.training.recipes`), the median time of a
training step (`train_on_batch`, Adam, the recipe's loss and crop size) in
float32 and in `mixed_bfloat16`, each case in its own process, the cases
interleaved round after round, and the speed-up. Random inputs: the step
time does not depend on the pixels. Accuracy is measured by the recipes'
own benchmarks (`bench_accuracy.py`, `bench_camvid.py`, with
`--set mixed_precision=...`). `--backbones` times the recipes that have an
encoder (`street-cpu`) with other encoders in its place too, so the step
time of a candidate encoder is measured beside the recipe's.

    python benchmarks/bench_precision.py [--rounds 3] [--steps 10]
    python benchmarks/bench_precision.py --recipes street-cpu \
        --backbones mobilenet_v2 efficientnet_b0
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_cases, median, save, step_case_parser, table  # noqa: E402

RECIPES = ("nuclei-cpu", "street-cpu")
POLICIES = ("float32", "mixed_bfloat16")
# Output channels of each recipe's model: nuclei in instance mode (background,
# nucleus, boundary); CamVid's 11 classes.
OUTPUTS = {"nuclei-cpu": 3, "street-cpu": 11}


def case(recipe_name: str, policy: str, backbone: str, warmup: int, steps: int) -> float:
    """Median seconds of one training step, in this process (`backbone`:
    an encoder in place of the recipe's, or `-` for the recipe's model)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from keras_unet import build_unet, get_loss
    from keras_unet.training.recipes import recipe

    config = recipe(recipe_name)
    keras.mixed_precision.set_global_policy(policy)
    settings = {**config["model"], **({"backbone": backbone} if backbone != "-" else {})}
    model = build_unet((None, None, config.get("channels", 3)), OUTPUTS[recipe_name],
                       **settings)
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
    parser = step_case_parser(__doc__)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--backbones", nargs="+", metavar="NAME",
                        help="encoders to time in place of an encoder recipe's own")
    args = parser.parse_args()
    if args.case:
        recipe_name, policy, backbone = args.case
        print(json.dumps(case(recipe_name, policy, backbone, args.warmup, args.steps)))
        return

    from keras_unet.training.recipes import recipe

    models = [(r, b) for r in args.recipes
              for b in (args.backbones if args.backbones and recipe(r)["model"].get("backbone")
                        else ["-"])]
    seconds = interleaved_cases(__file__, [(r, p, b) for r, b in models for p in POLICIES],
                                args)
    rows = []
    for recipe_name, backbone in models:
        base = median(seconds[recipe_name, "float32", backbone])
        for policy in POLICIES:
            values = seconds[recipe_name, policy, backbone]
            rows.append({"recipe": recipe_name,
                         "backbone": recipe(recipe_name)["model"].get("backbone", "none")
                         if backbone == "-" else backbone, "policy": policy,
                         "ms/step": round(median(values) * 1e3, 1),
                         "rounds": ", ".join(f"{v * 1e3:.0f}" for v in values),
                         "speed-up": round(base / median(values), 2)})
    print(table(rows, ["recipe", "backbone", "policy", "ms/step", "rounds", "speed-up"]))
    print(save("precision", {"rounds": args.rounds, "steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
