"""Bundles a trained run as a pre-trained model of the package (maintainers only).

Writes `keras_unet/models/pretrained/<name>/`: `model.keras` (the weights, without
the optimizer state), `labels.txt`, and `card.json` with what the model was
trained on and how, its scores from a `bench_accuracy.py` result, and the
SHA-256 of `model.keras`. The bundled nucleus model was made with

    python benchmarks/bench_accuracy.py --modes instances --exclude datasets/nuclei \
        --object-size auto --tag pretrain
    python tools/bundle_pretrained.py runs/bench_accuracy/cpu-pretrain/instances \
        nuclei_dsb2018 --scores benchmarks/results/accuracy_pretrain_object_size_auto.json \
        --description "..."   (the text in its card.json)
"""

import argparse
import csv
import dataclasses
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

from keras_unet.data.augment import Augment
from keras_unet.files import atomic_write, write_text
from keras_unet.models.pretrained import PRETRAINED_DIR

# Training settings that describe this machine's paths, or are given above.
LOCAL_KEYS = ("data", "images_dir", "masks_dir", "labels", "val_list", "work_dir",
              "init_from", "oversample", "verbose", "tensorboard", "target", "model",
              "boundary_width", "channels")


# How a card's object_size was measured (keras_unet.data.instances.dataset_object_size).
OBJECT_SIZE_MEASURED = (
    "equivalent diameters sqrt(4*area/pi) of the {objects:,} objects of the training images "
    "(median, 10th and 90th percentiles); image_diameter: the median over the images of "
    "each image's area-weighted median diameter; px")


def oversampled(path: str | None) -> dict[str, int]:
    """`{times: images}` of an `--oversample` file (`name,times` lines)."""
    if not path:
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return dict(sorted(Counter(row["times"] for row in csv.DictReader(f)).items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="training run folder")
    parser.add_argument("name", help="name of the bundled model")
    parser.add_argument("--checkpoint", default="last.keras")
    parser.add_argument("--scores", required=True, help="bench_accuracy.py result JSON")
    parser.add_argument("--scores-key", default="unet_instances")
    parser.add_argument("--description", required=True,
                        help="what the model segments and what it was trained on")
    args = parser.parse_args()

    from keras_unet.inference.predict import load_keras_model

    run = Path(args.run)
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    bench = json.loads(Path(args.scores).read_text(encoding="utf-8"))
    model = load_keras_model(run / "checkpoints" / args.checkpoint)
    output = PRETRAINED_DIR / args.name
    output.mkdir(exist_ok=True)
    atomic_write(output / "model.keras", model.save)  # without the optimizer state
    digest = hashlib.sha256((output / "model.keras").read_bytes()).hexdigest()
    shutil.copy(run / "labels.txt", output / "labels.txt")
    card = {
        "name": args.name,
        "description": args.description,
        "model_sha256": digest,
        "parameters": model.count_params(),
        "input": {"channels": config["channels"], "dtype": "uint8 RGB (0-255)"},
        "target": config["target"],
        "boundary_width": config["boundary_width"],
        "model": config["model"],
        "training": {key: value for key, value in config.items() if key not in LOCAL_KEYS},
        # What the augmentation was, defaults for the model included.
        "augmentation": dataclasses.asdict(Augment.for_model(
            config.get("augment", {}), config["model"].get("input_normalization"))),
        "oversampled_images": oversampled(config.get("oversample")),
        "training_seconds": bench["training_seconds"].get(config["target"]),
        "checkpoint": args.checkpoint,
        "scores_on_dsb2018_val": bench["scores"][args.scores_key],
        "data_licence": "CC0 1.0 (BBBC038v1, Caicedo et al., Nature Methods 2019)",
        "licence": "Apache-2.0 (the weights, like keras-unet)",
    }
    sizes = json.loads((run / "object_size.json").read_text(encoding="utf-8"))
    card["object_size"] = {
        "median_diameter": sizes["median_diameter"], "range": sizes["range"],
        "image_diameter": sizes["image_diameter"],
        "measured": OBJECT_SIZE_MEASURED.format(objects=sizes["objects"])}
    write_text(output / "card.json", json.dumps(card, indent=2) + "\n")
    print(f"{output}: {(output / 'model.keras').stat().st_size / 1e6:.1f} MB, sha256 {digest}")


if __name__ == "__main__":
    main()
