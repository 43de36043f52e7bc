"""Street scenes: a U-Net trained from scratch on CamVid's 11 classes.

Trains on the 367 training scenes of `../shared/datasets/camvid` (480x360,
void id 11 ignored) and scores the best checkpoint on the 101 validation
scenes at full resolution, as the field reports CamVid: per-class IoU,
mIoU over the 11 classes, global pixel accuracy and class-average
accuracy. Prints a table and writes `benchmarks/results/camvid_<recipe>.json`.

    python benchmarks/bench_camvid.py                  # the CPU recipe (45 min, 2 cores)
    python benchmarks/bench_camvid.py --recipe gpu     # the longer recipe
    python benchmarks/bench_camvid.py --set model.backbone=mobilenet_v2 --tag mnv2

Anchor: ENet, trained from scratch, 51.3 % mIoU on the test split (nothing
pretrained can be downloaded here). Runs go to
`runs/bench_camvid/<recipe>[-<tag>]`; a rerun continues or reports them.
CamVid is for research use: never bundle it or weights trained on it.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow, recipe_with, save, table  # noqa: E402

from keras_unet.training.recipes import RECIPES as PACKAGE_RECIPES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "datasets" / "camvid"
VOID = 11

# The package's street recipes (`keras-unet train --recipe street-cpu`).
RECIPES = {"cpu": PACKAGE_RECIPES["street-cpu"], "gpu": PACKAGE_RECIPES["street-gpu"]}


def dataset_folder(source: Path, folder: Path) -> tuple[Path, Path]:
    """One dataset folder over both splits (file links), and its `val.txt`."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for split in ("train", "val"):
            for path in (source / split / sub).glob("*.png"):
                link = folder / sub / path.name
                if not link.exists():
                    link.symlink_to(path.resolve())
    (folder / "labels.txt").write_text((source / "labels.txt").read_text())
    val = folder / "val.txt"
    val.write_text("".join(f"{p.stem}\n" for p in sorted((source / "val" / "masks").glob("*"))))
    return folder, val


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value (model.KEY=VALUE for the model)")
    parser.add_argument("--tag", default="", help="name of this variant")
    parser.add_argument("--data", default=str(SOURCE))
    parser.add_argument("--work", default=str(REPO / "runs" / "bench_camvid"))
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"CamVid not found at {args.data}")
    quiet_tensorflow()
    from keras_unet.evaluation.evaluate import evaluate_dataset
    from keras_unet.inference.predict import load_predictor
    from keras_unet.training.config import ConfigError, TrainConfig
    from keras_unet.training.train import load_training_data, train

    name = args.recipe + (f"-{args.tag}" if args.tag else "")
    work = Path(args.work) / name
    folder, val = dataset_folder(Path(args.data), Path(args.work) / "data")
    try:  # a bad --set is named before anything trains
        config = TrainConfig.from_values(
            {**recipe_with(RECIPES, args.recipe, args.set), "data": str(folder),
             "val_list": str(val), "ignore_index": VOID, "work_dir": str(work),
             "tensorboard": False, "verbose": 2}, "--set")
        config.validate()
    except ConfigError as err:
        sys.exit(f"error: {err}")
    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    _, val_set = load_training_data(config)
    predictor = load_predictor(result.run_dir / "checkpoints" / "best.keras")
    scores = evaluate_dataset(predictor, val_set, work / "evaluation", worst=3)
    rows = [{"class": c, "IoU": s["iou"], "accuracy": s["recall"]}
            for c, s in scores["classes"].items()]
    rows.append({"class": "mean (mIoU, class accuracy)", "IoU": scores["mean_iou"],
                 "accuracy": scores["class_accuracy"]})
    print(table(rows, ["class", "IoU", "accuracy"]))
    print(f"global pixel accuracy {scores['pixel_accuracy']:.3f}; {len(val_set.images)} "
          f"validation scenes at full size; training {seconds / 60:.1f} min")
    path = save(f"camvid_{name}", {
        "recipe": name, "config": config.__dict__, "training_seconds": seconds,
        "validation_images": len(val_set.images), "mean_iou": scores["mean_iou"],
        "pixel_accuracy": scores["pixel_accuracy"],
        "class_accuracy": scores["class_accuracy"],
        "classes": {c: s["iou"] for c, s in scores["classes"].items()},
    })
    print(f"results: {path}")


if __name__ == "__main__":
    main()
