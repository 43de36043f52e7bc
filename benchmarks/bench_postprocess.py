"""Instance post-processing: how sure an interior must be to seed an object,
and how small an object may be.

An instance model's objects grow from seeds, its connected sure-interior
pixels, and objects under a minimum size are dropped
(`keras_unet.data.instances.label_instances`). This scores the DSB2018
object score (mean AP, F1 at IoU 0.5, split and merged nuclei) on the same
predictions, one prediction per image (`--object-size auto`, the default of
`predict` and `evaluate`), for several seed thresholds (at the default
minimum size) and several minimum sizes (at the default threshold): 10
pixels, or a circle of a fraction of the training objects' 10th-percentile
diameter at the scale the image was predicted at (`min_object_size`):

- "tune": the DSB2018 training images of the bundled sample
  (`datasets/nuclei`), which the bundled model was not trained on; the
  threshold is chosen there;
- "val": the 113 validation images, as a check.

With `--scales 0.5 2`, the images are also shown at those sizes (bilinear;
the annotated objects nearest-neighbour), as a user's images at another
magnification would be.

"argmax" is the rule before the threshold: every pixel whose most likely
class is an object class is interior.

    python benchmarks/bench_postprocess.py                       # the bundled model
    python benchmarks/bench_postprocess.py --scales 1 0.5 2
    python benchmarks/bench_postprocess.py --model runs/x/checkpoints/best.keras

Prints a table and writes `benchmarks/results/postprocess.json`.
"""

import argparse
import csv
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow, save, table  # noqa: E402

from keras_unet.cli.types import positive_float  # noqa: E402
from keras_unet.errors import KerasUnetError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "datasets" / "dsb2018_nuclei"
THRESHOLDS = ["argmax", 0.5, 0.6, 0.7, 0.8, 0.9]
# Minimum object sizes besides the default: pixels (int), or fractions of the
# training objects' 10th-percentile diameter (the default is
# MIN_DIAMETER_FRACTION = 0.9).
MIN_SIZES = [10, 0.5, 0.7, 1.1]


def splits(source: Path) -> dict[str, list[str]]:
    """`{"tune": [...], "val": [...]}` image ids (see the module docstring)."""
    with open(source / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    sample = {p.stem for p in (REPO / "datasets" / "nuclei").glob("*.json")}
    return {"tune": [r["id"] for r in rows if r["split"] == "train" and r["id"] in sample],
            "val": [r["id"] for r in rows if r["split"] == "val"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei_dsb2018",
                        help="an instance model: a .keras/.tflite file or a bundled name")
    parser.add_argument("--scales", nargs="+", type=positive_float, default=[1.0],
                        help="show the images at these sizes too (1 = as they are)")
    parser.add_argument("--data", default=str(SOURCE))
    args = parser.parse_args()
    source = Path(args.data)
    if not (source / "metadata.csv").is_file():
        sys.exit(f"{source}: the DSB2018 subset is not there (../shared/datasets)")
    quiet_tensorflow()
    from PIL import Image

    from keras_unet.data.instances import (
        MIN_DIAMETER_FRACTION,
        MIN_OBJECT_SIZE,
        SEED_THRESHOLD,
        label_instances,
        min_object_size,
    )
    from keras_unet.data.readers import read_image
    from keras_unet.evaluation.scores import ObjectScores, object_scores
    from keras_unet.inference.predict import load_predictor, predict_scaled
    from keras_unet.inference.scale import resize

    try:
        predictor = load_predictor(args.model)
    except KerasUnetError as err:
        sys.exit(f"error: {err}")
    if predictor.target != "instances":
        sys.exit(f"{args.model}: not an instance model (target {predictor.target!r})")
    size = "auto" if predictor.object_size else None
    recorded = predictor.object_size

    def min_size(rule, factor: float) -> int:
        if rule == "default":  # the rule, at the prediction's factor
            return predictor.min_object_size(factor)
        return rule if isinstance(rule, int) else min_object_size(recorded, factor, rule)

    default_label = (f"{MIN_DIAMETER_FRACTION} x p10 (default)" if recorded
                     else f"{MIN_OBJECT_SIZE} px (default)")
    variants = [(t, "default") for t in THRESHOLDS]
    variants += [(SEED_THRESHOLD, m) for m in MIN_SIZES if recorded]
    rows, started = [], time.perf_counter()
    for (split, ids), scale in itertools.product(splits(source).items(), args.scales):
        scores = {v: ObjectScores() for v in variants}
        for name in ids:
            image = read_image(source / "images" / f"{name}.png", predictor.channels)
            truth = np.asarray(Image.open(source / "labels" / f"{name}.png"))
            if scale != 1.0:
                height, width = (max(1, round(n * scale)) for n in truth.shape)
                image = resize(image, height, width)
                truth = np.asarray(Image.fromarray(truth).resize((width, height),
                                                                 Image.NEAREST))
            probabilities, factor = predict_scaled(predictor, image, object_size=size)
            # The argmax rule is the threshold 0.5 on one-hot outputs: the same
            # classes and foreground, interior 1 where an object class wins.
            one_hot = np.eye(probabilities.shape[-1], dtype=np.float32)[probabilities.argmax(-1)]
            for t, m in variants:
                found, _ = label_instances(one_hot if t == "argmax" else probabilities,
                                           "instances", min_size=min_size(m, factor),
                                           seed_threshold=0.5 if t == "argmax" else t)
                scores[t, m] = scores[t, m].add(object_scores(truth, found))
        for (t, m), s in scores.items():
            rows.append({"split": split, "scale": scale, "images": s.images,
                         "seed threshold": str(t),
                         "min size": default_label if m == "default" else
                                     f"{m} px" if isinstance(m, int) else f"{m} x p10",
                         "mean AP": round(s.mean_ap, 4), "F1@0.5": round(s.f1, 4),
                         "split nuclei": s.split, "merged": s.merged, "missed": s.missed})
    print(table(rows, list(rows[0])))
    print(f"{args.model}; object size {size or 'off'}; {time.perf_counter() - started:.0f} s")
    print(save("postprocess", {"model": args.model, "object_size": size or "off",
                               "rows": rows}))


if __name__ == "__main__":
    main()
