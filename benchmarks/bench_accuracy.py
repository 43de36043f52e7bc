"""Accuracy on real data: U-Nets against Otsu baselines on DSB2018 nuclei.

On the suggested train/val split of `../shared/datasets/dsb2018_nuclei`
(445 training, 113 validation images; fluorescence, grey and colour
brightfield), scores on the validation images:

(a) Otsu threshold (the smaller side is foreground) + connected components,
(b) Otsu + distance-transform watershed,
(c) a binary (semantic) U-Net + connected components,
(d) the instance-mode U-Net (boundary class + seeded watershed),

each by foreground Dice (pooled over pixels, and averaged over images) and
by the DSB2018 object score (mean AP over IoU 0.5:0.05:0.95), F1 at IoU 0.5,
missed/split/merged objects, for all images, per modality, per brightness
bin and per object-size bin (`keras_unet.evaluation.groups`). Prints a
table and writes `benchmarks/results/accuracy.json`.

    python benchmarks/bench_accuracy.py                 # the CPU recipe (2 cores)
    python benchmarks/bench_accuracy.py --recipe gpu    # the longer recipe
    python benchmarks/bench_accuracy.py --set model.filters=8 --tag f8   # a variant
    python benchmarks/bench_accuracy.py --score nuclei_dsb2018   # a model, no training

Training runs go to `runs/bench_accuracy/<recipe>[-<tag>]/<mode>`; a rerun reuses
finished runs (delete the folder to retrain).
"""

import argparse
import csv
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow, recipe_with, save  # noqa: E402

from keras_unet import files  # noqa: E402
from keras_unet.training.recipes import RECIPES as PACKAGE_RECIPES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "datasets" / "dsb2018_nuclei"

# The package's nuclei recipes (`keras-unet train --recipe nuclei-cpu`); each
# benchmark run trains both targets with them. The CPU one fits 45 minutes on
# 2 cores in all: crops are drawn by area, and it validates 12 times, not 20
# (validating takes about as long as 100 training steps here).
RECIPES = {"cpu": PACKAGE_RECIPES["nuclei-cpu"], "gpu": PACKAGE_RECIPES["nuclei-gpu"]}


def dataset_folder(source: Path, folder: Path) -> tuple[Path, Path, dict]:
    """A keras-unet dataset folder over the DSB2018 files (links, no copies).

    Returns:
        `(dataset folder, val.txt, {name: modality})`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in (("images", "images"), ("masks", "masks"), ("instances", "labels")):
        link = folder / name
        if not link.exists():
            link.symlink_to((source / target).resolve(), target_is_directory=True)
    (folder / "labels.txt").write_text("__ignore__\n_background_\nnucleus\n")
    with open(source / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val = folder / "val.txt"
    val.write_text("".join(f"{r['id']}\n" for r in rows if r["split"] == "val"))
    return folder, val, {r["id"]: r["modality"] for r in rows}


def balance_file(source: Path, path: Path, balance: str = "sqrt",
                 exclude: frozenset = frozenset(), crop_size: int | None = None) -> Path:
    """`name,times` of the training images for `TrainConfig.oversample`.

    `balance` "sqrt" draws each modality's images sqrt(n_largest / n) times
    per pass; "sqrt-acquisition" also balances a modality's acquisitions
    (its image sizes: e.g. DSB2018's dim 640x512 fluorescence images) the
    same way within it, the two factors multiplied; "none" draws every image
    once. n counts a group's images, or its crops with `crop_size` (area
    sampling, see `keras_unet.data.pipeline.area_repeats`), of the images
    trained on; the names in `exclude` are drawn 0 times (left out).
    """
    from keras_unet.data.pipeline import area_repeats

    with open(source / "metadata.csv", newline="") as f:
        training = [r for r in csv.DictReader(f) if r["split"] == "train"]
    left_out = [r["id"] for r in training if r["id"] in exclude]
    rows = [r for r in training if r["id"] not in exclude]
    crops = (area_repeats([(int(r["height"]), int(r["width"])) for r in rows], crop_size)
             if crop_size else [1] * len(rows))

    def sqrt_factors(key, within: str | None = None) -> dict:
        counts = Counter()
        for row, n in zip(rows, crops):
            if within in (None, row["modality"]):
                counts[key(row)] += n
        return {k: math.sqrt(max(counts.values()) / n) for k, n in counts.items()}

    modality = sqrt_factors(lambda r: r["modality"])
    acquisition = {}
    if balance == "sqrt-acquisition":
        for name in modality:
            acquisition |= sqrt_factors(lambda r: (r["modality"], r["height"], r["width"]), name)
    times = {r["id"]: 1 if balance == "none" else max(1, round(
        modality[r["modality"]] * acquisition.get((r["modality"], r["height"], r["width"]), 1)))
        for r in rows}
    times |= {name: 0 for name in left_out}
    path.write_text("name,times\n" + "".join(f"{name},{n}\n" for name, n in times.items()
                                             if n != 1))
    print(f"oversampling per pass: {dict(sorted(Counter(times.values()).items()))} "
          f"(times: images); left out: {len(left_out)}")
    return path


def annotated_names(folder: Path) -> frozenset:
    """The image names of a LabelMe folder (the stems of its JSON files)."""
    return frozenset(p.stem for p in folder.glob("*.json"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe setting, e.g. model.filters=8")
    parser.add_argument("--tag", default="", help="name of this variant")
    parser.add_argument("--balance", choices=("none", "sqrt", "sqrt-acquisition"),
                        default="sqrt",
                        help="oversample the rare modalities: sqrt draws a modality's images "
                             "sqrt(n_largest / n) times per pass; sqrt-acquisition does so "
                             "by modality and image size")
    parser.add_argument("--modes", nargs="+", default=["semantic", "instances"],
                        choices=("semantic", "instances"))
    parser.add_argument("--exclude", metavar="FOLDER",
                        help="leave the training images annotated in this LabelMe folder out "
                             "(e.g. datasets/nuclei, to pre-train for the main job)")
    parser.add_argument("--score", metavar="MODEL",
                        help="train nothing: score this model (a .keras/.tflite file or a "
                             "bundled name, e.g. nuclei_dsb2018) beside the baselines")
    parser.add_argument("--object-size", choices=("off", "auto"), default="off",
                        help="score the models with their images rescaled to the training "
                             "object size (auto) or as they are (off)")
    parser.add_argument("--tta", action="store_true",
                        help="score the models with flip test-time augmentation")
    parser.add_argument("--data", default=str(SOURCE))
    parser.add_argument("--work", default=str(REPO / "runs" / "bench_accuracy"))
    args = parser.parse_args()
    source = Path(args.data)
    if not (source / "metadata.csv").is_file():
        sys.exit(f"{source}: the DSB2018 subset is not there (../shared/datasets)")

    quiet_tensorflow()
    from keras_unet.evaluation.baselines import format_comparison, score_methods
    from keras_unet.inference.predict import load_predictor
    from keras_unet.training.config import ConfigError
    from keras_unet.training.train import TrainConfig, load_training_data, train

    work = Path(args.work) / (args.recipe + (f"-{args.tag}" if args.tag else ""))
    data, val_list, modalities = dataset_folder(source, Path(args.work) / "data")
    recipe = recipe_with(RECIPES, args.recipe, args.set)
    try:  # a bad --set is named before anything trains
        configs = {mode: TrainConfig.from_values(
            {**recipe, "data": str(data), "val_list": str(val_list),
             "work_dir": str(work / mode), "foreground_value": 255, "target": mode,
             "tensorboard": False, "verbose": 2},
            "--set") for mode in args.modes}
        for config in configs.values():
            config.validate()
    except ConfigError as err:
        sys.exit(f"error: {err}")
    exclude = annotated_names(Path(args.exclude)) if args.exclude else frozenset()
    if args.balance != "none" or exclude:
        name = f"balance-{work.name}.csv"
        crop_size = recipe["crop_size"] if recipe.get("sampling") == "area" else None
        recipe["oversample"] = str(balance_file(source, Path(args.work) / name,
                                                args.balance, exclude, crop_size))
        for config in configs.values():
            config.oversample = recipe["oversample"]
    predictors = {}
    if args.score:
        predictors[Path(args.score).stem] = load_predictor(args.score)
        configs = {}
    # Training seconds add up over resumed sessions of a run.
    seconds_file = work / "seconds.json"
    seconds = json.loads(seconds_file.read_text()) if seconds_file.is_file() else {}
    for mode, config in configs.items():
        print(f"training the {mode} U-Net -> {config.work_dir}", flush=True)
        start = time.perf_counter()
        result = train(config)
        if not result.already_finished:
            seconds[mode] = round(seconds.get(mode, 0) + time.perf_counter() - start, 1)
            files.write_text(seconds_file, json.dumps(seconds))  # whole, if killed
        name = "unet_instances" if mode == "instances" else "unet_semantic"
        predictors[name] = load_predictor(result.run_dir / "checkpoints" / "last.keras")
    if not configs:  # --score: the validation split of the first mode's config
        configs = {args.modes[0]: TrainConfig.from_values(
            dict(data=str(data), val_list=str(val_list), work_dir=str(work / "score"),
                 foreground_value=255, **recipe), "--set")}
    _, val_set = load_training_data(next(iter(configs.values())))
    start = time.perf_counter()
    table = score_methods(val_set, predictors, modalities, image_bins=True, progress=True,
                          object_size=None if args.object_size == "off" else "auto",
                          tta=args.tta)
    scoring = time.perf_counter() - start
    print(format_comparison(table))
    print(f"training seconds: {seconds}; scoring {scoring:.0f} s for {len(val_set.images)} "
          f"images; recipe {args.recipe} {recipe}; {os.cpu_count()} cores")
    name = "accuracy" + (f"_{args.recipe}" if args.recipe != "cpu" else "") + (
        f"_{args.tag}" if args.tag else "") + (f"_score_{Path(args.score).stem}"
                                               if args.score else "") + (
        "_object_size_auto" if args.object_size == "auto" else "") + (
        "_tta" if args.tta else "")
    print(save(name, {"recipe": args.recipe, "settings": recipe, "tag": args.tag,
                      "training_seconds": seconds, "scoring_seconds": round(scoring, 1),
                      "object_size": args.object_size, "tta": args.tta, "scores": table,
                      "checkpoint": "last.keras"}))


if __name__ == "__main__":
    main()
