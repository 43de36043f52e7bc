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
    "--tfrecord-shards": ("tfrecord_shards", dict(type=int, help="read via N TFRecords")),
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
    if args.border_weights:
        overrides["border_weights"] = True
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


def _size(text: str) -> tuple[int, int]:
    """Parses `256` or `256x320` into `(height, width)`."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE or HxW, got {text!r}") from None


def _export(args) -> int:
    from keras_unet.dataset import DatasetError
    from keras_unet.export import ExportError, ExportVerificationError, export_run

    try:
        reports = export_run(
            args.source, args.output, precisions=args.precision, formats=args.format,
            input_size=args.input_size, dynamic=args.dynamic, data=args.data,
            calibration_samples=args.calibration_samples,
            verification_samples=args.verification_samples, io_type=args.io_type,
            min_agreement=args.min_agreement, num_threads=args.threads,
        )
    except (ExportError, ExportVerificationError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for report in reports:
        print(report.format())
        if report.ops:
            print(f"{'':13}ops: {', '.join(report.ops)}")
    return 0


def _load_predictor_and_names(args):
    from keras_unet.inference import load_predictor
    from keras_unet.labels import read_labels

    predictor = load_predictor(args.model, num_threads=args.threads)
    labels = Path(args.labels) if args.labels else Path(args.model).parent / "labels.txt"
    if not labels.is_file():
        labels = Path(args.model).parent.parent / "labels.txt"  # run/checkpoints/x.keras
    names = read_labels(labels) if labels.is_file() else None
    return predictor, names


def _predict(args) -> int:
    from keras_unet.inference import InferenceError, predict_files

    try:
        predictor, names = _load_predictor_and_names(args)
        written, errors = predict_files(
            predictor, args.input, args.output, names=names, tile=args.tile,
            overlap=args.overlap, tta=args.tta, probabilities=args.probabilities,
            progress=True,
        )
    except InferenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path, reason in errors:
        print(f"ERROR {path}: {reason}", file=sys.stderr)
    print(f"{written} images predicted, {len(errors)} failed -> {args.output}")
    return 1 if errors else 0


def _evaluate(args) -> int:
    from keras_unet.dataset import DatasetError, load_dataset
    from keras_unet.evaluate import evaluate_dataset, format_confusion, format_scores
    from keras_unet.inference import InferenceError

    try:
        predictor, names = _load_predictor_and_names(args)
        dataset = load_dataset(args.data, images_dir=args.images, masks_dir=args.masks,
                               labels=args.labels or (None if args.data else names),
                               foreground_value=args.foreground_value)
        result = evaluate_dataset(predictor, dataset, args.output, tile=args.tile,
                                  worst=args.worst, tta=args.tta, progress=True)
    except (DatasetError, InferenceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_scores(result))
    print("confusion matrix (rows truth, columns prediction):")
    print(format_confusion(result["confusion_matrix"], dataset.names))
    print("worst images (Dice): " + ", ".join(f"{n} {d:.3f}" for n, d in result["worst"]))
    print(f"report: {args.output} (scores.json, per_image.csv, confusion.png, worst/)")
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
    tr.add_argument("--border-weights", action="store_true",
                    help="U-Net paper weights between touching objects (needs instances/)")
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

    ex = sub.add_parser("export", help="export to TFLite, verified against Keras")
    ex.add_argument("source", help="training run folder or .keras model")
    ex.add_argument("output", help="folder for the .tflite files")
    ex.add_argument("--precision", nargs="+", default=["float32", "float16", "int8"],
                    choices=("float32", "float16", "dynamic_int8", "int8"))
    ex.add_argument("--format", nargs="*", default=[], choices=("saved_model", "onnx"),
                    help="also export these formats (verified the same way)")
    ex.add_argument("--input-size", type=_size, default=(256, 256), help="SIZE or HxW (256)")
    ex.add_argument("--dynamic", action="store_true", help="keep height/width dynamic")
    ex.add_argument("--data", help="dataset folder (default: the run's)")
    ex.add_argument("--calibration-samples", type=int, default=64)
    ex.add_argument("--verification-samples", type=int, default=16)
    ex.add_argument("--io-type", default="float32", choices=("float32", "int8", "uint8"),
                    help="int8 models: input/output type")
    ex.add_argument("--min-agreement", type=float, help="required mask agreement (0..1)")
    ex.add_argument("--threads", type=int, help="LiteRT threads")
    ex.set_defaults(func=_export)

    for name, helptext in (("predict", "masks and overlays for images"),
                           ("evaluate", "scores on a dataset with ground truth")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("model", help=".keras or .tflite model")
        if name == "predict":
            p.add_argument("input", help="image, folder or glob")
            p.add_argument("output", help="output folder")
            p.add_argument("--probabilities", action="store_true", help="save .npy maps")
            p.add_argument("--overlap", type=float, default=0.5, help="tile overlap (0.5)")
            p.set_defaults(func=_predict)
        else:
            p.add_argument("--data", help="dataset folder (images/, masks/, labels.txt)")
            p.add_argument("--images", help="images folder (plain pair)")
            p.add_argument("--masks", help="masks folder (plain pair)")
            p.add_argument("--foreground-value", type=int, help="binary masks: fg value")
            p.add_argument("--output", default="evaluation", help="report folder")
            p.add_argument("--worst", type=int, default=5, help="worst images to draw")
            p.set_defaults(func=_evaluate)
        p.add_argument("--labels", help="labels.txt (default: beside the model)")
        p.add_argument("--tile", type=_size, help="tile size for any-size .keras models")
        p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
        p.add_argument("--threads", type=int, help="LiteRT threads")

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
