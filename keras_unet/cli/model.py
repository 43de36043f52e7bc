"""`predict`, `evaluate` and `export`: using a trained model."""

from __future__ import annotations

import argparse
import sys

from keras_unet.cli.types import (
    fraction,
    non_negative_float,
    non_negative_int,
    object_size,
    overlap,
    positive_int,
    size,
)

# `--object-size` not given: rescale where the model records its training
# object size. Measured with the bundled model on the DSB2018 validation
# images (image Dice / mean AP): auto 0.900 / 0.528 against off 0.897 / 0.522
# at their own size, 0.834 / 0.441 against 0.746 / 0.357 at half size and
# 0.892 / 0.498 against 0.871 / 0.420 at double size.
RECORDED = object()


def chosen_object_size(given, predictor) -> float | str | None:
    """`--object-size` as given, or by default `"auto"` for a model that
    records its training object size and off (`None`) for one that does not."""
    if given is not RECORDED:
        return given
    return "auto" if predictor.object_size else None


def add_parsers(add) -> None:
    """Adds `predict`, `evaluate` and `export` (`add(name, ...)` makes a subparser)."""
    ex = add("export", help="export to TFLite, verified against Keras",
             description="Exports a run (or a .keras model) to TFLite at each precision; each "
                         "file is run beside the Keras model on held-out images and refused "
                         "if they disagree. export_report.json says what was written.")
    ex.add_argument("source", help="training run folder (its best.keras), one of its "
                                   "checkpoints, a .keras model or a bundled model's name (with "
                                   "--data)")
    ex.add_argument("output", help="folder for the .tflite files")
    ex.add_argument("--precision", nargs="+", default=["float32", "float16", "int8"],
                    choices=("float32", "float16", "dynamic_int8", "int8"),
                    help="TFLite precisions")
    ex.add_argument("--format", nargs="*", default=[], choices=("saved_model", "onnx"),
                    help="also export these formats (verified the same way)")
    ex.add_argument("--input-size", type=size, default=(256, 256), help="SIZE or HxW")
    ex.add_argument("--dynamic", action="store_true", help="keep height/width dynamic")
    ex.add_argument("--data", help="dataset folder (default: the run's)")
    ex.add_argument("--calibration-samples", type=positive_int, default=64,
                    help="int8 calibration windows from the training images")
    ex.add_argument("--verification-samples", type=positive_int, default=16,
                    help="held-out windows the exports are verified on")
    ex.add_argument("--io-type", default="float32", choices=("float32", "int8", "uint8"),
                    help="int8 models: input/output type")
    ex.add_argument("--min-agreement", type=fraction, default=None,
                    help="required mask agreement, 0..1 (default: 0.999 float, 0.99 int8)")
    ex.add_argument("--threads", type=positive_int, help="LiteRT threads (default: all cores)")
    ex.add_argument("--web", metavar="DIR",
                    help="also write a static page that runs the model in a browser with "
                         "MediaPipe Tasks (float32 export, else the first written)")
    ex.add_argument("--tasks-vision", metavar="FOLDER",
                    help="--web: the @mediapipe/tasks-vision npm package (default: "
                         "node_modules/@mediapipe/tasks-vision)")
    card = ex.add_argument_group("model card (the standard TFLite metadata that MediaPipe "
                                 "and the Task Library show)")
    card.add_argument("--model-name", help="model name (default: keras-unet segmentation)")
    card.add_argument("--model-description", help="what the model segments (default: its "
                                                  "target, precision and classes)")
    card.add_argument("--model-version", help="model version (default: 1)")
    card.add_argument("--model-author", help="who made the model")
    card.add_argument("--model-license", help="the model's licence")
    ex.set_defaults(func=export)

    for name, helptext in (("predict", "masks, objects and overlays for images"),
                           ("evaluate", "scores on a dataset with ground truth")):
        p = add(name, help=helptext)
        p.add_argument("model", help=".keras or .tflite model, a training run folder (its "
                                      "best.keras) or a bundled model's name (nuclei_dsb2018)")
        if name == "predict":
            p.add_argument("input", help="image, folder or glob")
            p.add_argument("output", help="output folder")
            p.add_argument("--probabilities", action="store_true", help="save .npy maps")
            p.add_argument("--overlap", type=overlap, default=0.5,
                           help="tile overlap, a fraction of the tile (0..0.9)")
            p.add_argument("--min-size", type=non_negative_int, default=None,
                           help="instance models: smallest object kept, in pixels "
                                "(default: a circle of 0.9 of the training objects' "
                                "10th-percentile diameter, at the image's scale; 10 "
                                "for a model that records no object size)")
            p.add_argument("--labelme", action="store_true",
                           help="also write LabelMe JSON beside each image, to correct in "
                                "LabelMe (pre-annotation)")
            p.add_argument("--epsilon", type=non_negative_float, default=None,
                           help="--labelme: polygon simplification in pixels (default: 0.75)")
            p.add_argument("--embed-images", action="store_true",
                           help="--labelme: store the image in the JSON (imageData)")
            p.add_argument("--overwrite-predictions", action="store_true",
                           help="--labelme: replace earlier predicted JSON files (never a "
                                "person's annotation)")
            p.set_defaults(func=predict)
        else:
            p.add_argument("--data", help="dataset folder (default: the model's run's)")
            p.add_argument("--images", help="images folder (plain pair, with --masks)")
            p.add_argument("--masks", help="masks folder (plain pair, with --images)")
            p.add_argument("--foreground-value", type=non_negative_int,
                           help="binary masks: the mask value of the foreground")
            p.add_argument("--ignore-index", type=non_negative_int, metavar="ID",
                           help="a void mask value scored as ignore (default: the one the "
                                "model records: its run's, or its export's)")
            p.add_argument("--split", choices=("val", "train", "all"), default=None,
                           help="which pairs to score (default: val for a run's dataset, "
                                "else all)")
            p.add_argument("--output", default="evaluation", help="report folder")
            p.add_argument("--worst", type=non_negative_int, default=5,
                           help="worst images to draw")
            p.set_defaults(func=evaluate)
        p.add_argument("--labels", help="labels.txt (default: beside the model)")
        p.add_argument("--tile", type=size, help="tile size for any-size .keras models")
        p.add_argument("--tta", action="store_true",
                       help="flip test-time augmentation: average over the flips the model "
                            "was trained with (street models: left-right only)")
        # SUPPRESS: no attribute unless given (the help names the default).
        p.add_argument("--object-size", type=object_size, default=argparse.SUPPRESS,
                       metavar="auto|off|PX",
                       help="rescale each image so its objects have the size the model was "
                            "trained on: auto estimates their diameter by a first prediction, "
                            "PX gives it (default: auto for a model that records its training "
                            "object size, else off)")
        p.add_argument("--threads", type=positive_int, help="LiteRT threads")


def export(args) -> int:
    """Runs `export`."""
    from keras_unet.export import ExportError, export_run
    from keras_unet.export.web import find_tasks_vision, write_web_page

    if args.web:
        if args.dynamic:
            raise ExportError("--web needs a fixed --input-size: MediaPipe runs a model of "
                              "dynamic size at 1x1")
        if not set(args.precision) & {"float32", "float16", "int8"}:
            raise ExportError("--web needs a float32, float16 or int8 export (--precision)")
        find_tasks_vision(args.tasks_vision)  # before anything is exported
    elif args.tasks_vision:
        raise ExportError("--tasks-vision goes with --web")

    reports = export_run(
        args.source, args.output, precisions=args.precision, formats=args.format,
        input_size=args.input_size, dynamic=args.dynamic, data=args.data,
        calibration_samples=args.calibration_samples,
        verification_samples=args.verification_samples, io_type=args.io_type,
        min_agreement=args.min_agreement, num_threads=args.threads,
        about={key: getattr(args, f"model_{key}") for key in
               ("name", "description", "version", "author", "license")},
    )
    for report in reports:
        print(report.format())
        if report.ops:
            print(f"{'':13}ops: {', '.join(report.ops)}")
    if args.web:
        tflite = [r for r in reports if r.path.endswith(".tflite")]
        chosen = next((r for r in tflite if r.precision == "float32"), tflite[0])
        page = write_web_page(chosen.path, args.web, args.tasks_vision)
        print(f"web page: {page} ({chosen.precision}); serve it, e.g. python -m http.server "
              f"-d {args.web}, and open http://127.0.0.1:8000")
    return 0


def predict(args) -> int:
    """Runs `predict`."""
    from keras_unet.inference.predict import load_predictor, predict_files

    predictor = load_predictor(args.model, num_threads=args.threads, labels=args.labels)
    labelme = None
    if args.labelme:
        from keras_unet.inference.preannotate import LabelMeOutput

        labelme = LabelMeOutput(epsilon=args.epsilon, embed_images=args.embed_images,
                                overwrite_predictions=args.overwrite_predictions)
    elif args.epsilon is not None or args.embed_images or args.overwrite_predictions:
        print("error: --epsilon, --embed-images and --overwrite-predictions go with --labelme",
              file=sys.stderr)
        return 2
    result = predict_files(
        predictor, args.input, args.output, tile=args.tile, overlap=args.overlap,
        tta=args.tta, probabilities=args.probabilities,
        object_size=chosen_object_size(getattr(args, "object_size", RECORDED), predictor),
        min_size=args.min_size,
        labelme=labelme, progress=True,
    )
    for path, reason in result.errors:
        print(f"ERROR {path}: {reason}", file=sys.stderr)
    print(result.format(args.output))
    return 1 if result.errors else 0


def evaluate(args) -> int:
    """Runs `evaluate`."""
    from keras_unet.evaluation.evaluate import evaluate_dataset
    from keras_unet.evaluation.groups import format_groups
    from keras_unet.evaluation.scores import (
        ObjectScores,
        format_confusion,
        format_object_scores,
        format_scores,
        headline_name,
    )
    from keras_unet.inference.predict import load_predictor
    from keras_unet.training.runs import evaluation_pairs

    predictor = load_predictor(args.model, num_threads=args.threads, labels=args.labels)
    dataset, split = evaluation_pairs(
        predictor.path, data=args.data, images_dir=args.images, masks_dir=args.masks,
        labels=args.labels, foreground_value=args.foreground_value,
        split=args.split, model_names=predictor.names,
        ignore_index=predictor.ignore_index if args.ignore_index is None else args.ignore_index)
    print(f"scoring {len(dataset.images)} images ({split})")
    result = evaluate_dataset(predictor, dataset, args.output, tile=args.tile,
                              worst=args.worst, tta=args.tta, progress=True,
                              object_size=chosen_object_size(
                                  getattr(args, "object_size", RECORDED), predictor))
    print(format_scores(result))
    if result["objects"]:
        print(format_object_scores(ObjectScores.from_dict(result["objects"])))
    print("confusion matrix (rows truth, columns prediction):")
    print(format_confusion(result["confusion_matrix"], dataset.names))
    print(f"image-averaged Dice {result['image_dice']:.3f} (each image counts once; the "
          "table above pools pixels)")
    print("by image brightness and object size:")
    print(format_groups(result["groups"]))
    print(f"worst images ({headline_name(result)}): "
          + ", ".join(f"{n} {d:.3f}" for n, d in result["worst"]))
    print(f"report: {args.output} (scores.json, per_image.csv, confusion.png, worst/)")
    return 0
