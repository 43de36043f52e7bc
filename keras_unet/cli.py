"""The `keras-unet` command: parses arguments and calls library functions.

`keras-unet` with no arguments runs the main job on the bundled sample
dataset (`keras-unet run`). `tools/*.py` call the same subcommands.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATASET = REPO_ROOT / "datasets" / "nuclei"


def _labelme2masks(args) -> int:
    from keras_unet.convert import labelme_to_masks
    from keras_unet.labelme import LabelMeError

    try:
        summary = labelme_to_masks(
            args.input,
            args.output,
            labels=args.labels,
            instances=args.instances,
            overlays=args.overlays,
            force=args.force,
            strict=args.strict,
            workers=args.workers,
            progress=True,
        )
    except LabelMeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary.format())
    print(f"dataset written to {args.output} ({len(summary.labels) - 1} classes)")
    return 1 if summary.errors else 0


def _masks2labelme(args) -> int:
    from keras_unet.convert import masks_to_labelme

    summary = masks_to_labelme(
        args.images,
        args.masks,
        args.output,
        labels=args.labels,
        instances_dir=args.instances,
        foreground_value=args.foreground_value,
        epsilon=args.epsilon,
        embed_images=args.embed_images,
        progress=True,
    )
    print(summary.format())
    return 1 if summary.errors else 0


def _run(args) -> int:
    from keras_unet.quickstart import run_main_job

    return run_main_job(args.dataset, args.work_dir, epochs=args.epochs)


# train flag -> (TrainConfig field or "model.<build_unet option>", argparse kwargs)
TRAIN_FLAGS = {
    "--data": ("data", dict(help="dataset folder (images/, masks/, labels.txt)")),
    "--images": ("images_dir", dict(help="images folder of a plain image/mask pair")),
    "--masks": ("masks_dir", dict(help="masks folder of a plain image/mask pair")),
    "--labels": ("labels", dict(help="labels.txt (default: the dataset's)")),
    "--foreground-value": ("foreground_value", dict(type=int, help="binary masks: fg value")),
    "--val-fraction": ("val_fraction", dict(type=float, help="validation share (0.2)")),
    "--val-list": ("val_list", dict(help="file of validation pair names")),
    "--work-dir": ("work_dir", dict(help="run folder (runs/train)")),
    "--channels": ("channels", dict(type=int, choices=(1, 3), help="image channels (3)")),
    "--crop-size": ("crop_size", dict(type=int, help="training crop size (256)")),
    "--batch-size": ("batch_size", dict(type=int, help="global batch size (8)")),
    "--epochs": ("epochs", dict(type=int, help="epochs (50)")),
    "--steps-per-epoch": ("steps_per_epoch", dict(type=int, help="steps per epoch")),
    "--lr": ("lr", dict(type=float, help="peak learning rate (1e-3)")),
    "--schedule": ("schedule", dict(choices=("cosine", "constant"))),
    "--loss": ("loss", dict(choices=("dice_ce", "dice", "cross_entropy", "focal", "tversky"))),
    "--class-weighting": ("class_weighting", dict(choices=("none", "median_frequency"))),
    "--early-stopping": ("early_stopping", dict(type=int, help="patience, 0 = off (20)")),
    "--seed": ("seed", dict(type=int)),
    "--mixed-precision": ("mixed_precision", dict(choices=("auto", "on", "off"))),
    "--jit-compile": ("jit_compile", dict(choices=("auto", "on", "off"))),
    "--filters": ("model.filters", dict(type=int, help="base filters (32)")),
    "--depth": ("model.depth", dict(type=int, help="poolings (4)")),
    "--normalization": ("model.normalization", dict(choices=("batch", "group"))),
    "--upsampling": ("model.upsampling", dict(choices=("transpose", "nearest", "bilinear"))),
    "--dropout": ("model.dropout", dict(type=float)),
}


def _train(args) -> int:
    from keras_unet.dataset import DatasetError
    from keras_unet.train import TrainConfig, TrainingError, train

    overrides = {}
    for flag, (key, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if key.startswith("model."):
            overrides.setdefault("model", {})[key[6:]] = value
        else:
            overrides[key] = value
    for flag in ("attention", "residual"):
        if getattr(args, flag):
            overrides.setdefault("model", {})[flag] = True
    if args.deterministic:
        overrides["deterministic"] = True
    if args.no_tensorboard:
        overrides["tensorboard"] = False
    try:
        base = TrainConfig.from_file(args.config) if args.config else TrainConfig()
        model = {**base.model, **overrides.pop("model", {})}
        config = dataclasses.replace(base, **overrides, model=model)
        if not (config.data or (config.images_dir and config.masks_dir)):
            print("error: give --data or --images and --masks (or --config)", file=sys.stderr)
            return 2
        result = train(config)
    except (DatasetError, TrainingError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from keras_unet.evaluate import format_scores

    print(format_scores(result.scores))
    print(f"run folder: {result.run_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-unet` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="keras-unet",
        description="U-Net segmentation on Keras 3: LabelMe -> masks -> model -> TFLite.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="main job on a LabelMe dataset (default: bundled sample)")
    run.add_argument("--dataset", default=str(SAMPLE_DATASET), help="folder of LabelMe JSON")
    run.add_argument("--work-dir", default="runs/sample", help="where results go")
    run.add_argument("--epochs", type=int, default=None, help="training epochs")
    run.set_defaults(func=_run)

    tr = sub.add_parser("train", help="train a U-Net on a dataset folder")
    tr.add_argument("--config", help="YAML/JSON config; flags override it")
    for flag, (_, kwargs) in TRAIN_FLAGS.items():
        tr.add_argument(flag, default=None, **kwargs)
    tr.add_argument("--attention", action="store_true", help="attention gates")
    tr.add_argument("--residual", action="store_true", help="residual blocks")
    tr.add_argument("--deterministic", action="store_true", help="reproducible input")
    tr.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    tr.set_defaults(func=_train)

    l2m = sub.add_parser("labelme2masks", help="LabelMe JSON folder -> training dataset")
    l2m.add_argument("input", help="folder searched recursively for LabelMe .json files")
    l2m.add_argument("output", help="dataset folder to write")
    l2m.add_argument("--labels", help="labels.txt (default: every label found, sorted)")
    l2m.add_argument("--instances", action="store_true", help="also write instance masks")
    l2m.add_argument("--overlays", action="store_true", help="also write overlay pictures")
    l2m.add_argument("--force", action="store_true", help="rewrite up-to-date outputs")
    l2m.add_argument("--strict", action="store_true", help="stop at the first bad file")
    l2m.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    l2m.set_defaults(func=_labelme2masks)

    m2l = sub.add_parser("masks2labelme", help="mask dataset -> LabelMe JSON polygons")
    m2l.add_argument("images", help="folder of images")
    m2l.add_argument("masks", help="folder of class-id mask PNGs (same stems)")
    m2l.add_argument("output", help="folder for the JSON files and images")
    m2l.add_argument("--labels", required=True, help="labels.txt of the masks")
    m2l.add_argument("--instances", help="folder of instance-id PNGs (same names)")
    m2l.add_argument("--foreground-value", type=int, help="binary masks: value of class 1")
    m2l.add_argument("--epsilon", type=float, default=0.0, help="polygon simplification (px)")
    m2l.add_argument("--embed-images", action="store_true", help="store imageData in JSON")
    m2l.set_defaults(func=_masks2labelme)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-unet` command.

    Args:
        argv: Arguments (default: `sys.argv[1:]`). No subcommand means `run`.

    Returns:
        The exit code: 0 on success, 1 when some input failed, 2 on usage
        errors.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args([*argv, "run"])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
