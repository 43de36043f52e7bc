"""`train` and `run` (the main job): training runs from the command line."""

from __future__ import annotations

import dataclasses

from keras_unet.cli.types import (
    non_negative_int,
    open_fraction,
    positive_float,
    positive_int,
)
from keras_unet.data.weights import CLASS_WEIGHTINGS
from keras_unet.models.backbones import BACKBONES
from keras_unet.training.precision import PRECISIONS
from keras_unet.training.recipes import RECIPES

SAMPLE_DATASET = "datasets/nuclei (bundled)"

# flag -> (TrainConfig field or "model.<build_unet option>", argparse kwargs)
TRAIN_FLAGS = {
    "--data": ("data", dict(help="dataset folder (images/, masks/, labels.txt)")),
    "--images": ("images_dir", dict(help="images folder of a plain image/mask pair")),
    "--masks": ("masks_dir", dict(help="masks folder of a plain image/mask pair")),
    "--labels": ("labels", dict(help="labels.txt (default: the dataset's)")),
    "--foreground-value": ("foreground_value",
                           dict(type=non_negative_int, help="binary masks: fg value")),
    "--ignore-index": ("ignore_index",
                       dict(type=non_negative_int, metavar="ID",
                            help="a void mask value (e.g. CamVid's 11): ignored in training and "
                                 "scoring like 255, without rewriting the masks")),
    "--val-fraction": ("val_fraction", dict(type=open_fraction, help="validation share")),
    "--val-list": ("val_list", dict(help="file of validation pairs: a name (or image file "
                                          "name) per line")),
    "--work-dir": ("work_dir", dict(help="run folder")),
    "--target": ("target", dict(choices=("semantic", "instances"),
                                help="instances: also learn object boundaries, to separate "
                                     "touching objects (needs instances/)")),
    "--boundary-width": ("boundary_width", dict(type=positive_int,
                                                help="instances: boundary width in pixels")),
    "--channels": ("channels", dict(type=int, choices=(1, 3), help="image channels")),
    "--crop-size": ("crop_size", dict(type=positive_int, help="training crop size")),
    "--batch-size": ("batch_size", dict(type=positive_int, help="global batch size")),
    "--epochs": ("epochs", dict(type=positive_int, help="epochs")),
    "--steps-per-epoch": ("steps_per_epoch", dict(type=positive_int,
                                                  help="steps per epoch (default: one pass)")),
    "--time-budget": ("time_budget", dict(type=positive_float, metavar="MINUTES",
                                          help="fit the run into this many minutes "
                                               "(measures the step time first)")),
    "--lr": ("lr", dict(type=positive_float, help="peak learning rate")),
    "--schedule": ("schedule", dict(choices=("cosine", "constant"), help="learning rate")),
    "--loss": ("loss", dict(choices=("dice_ce", "dice", "cross_entropy", "focal", "tversky"),
                            help="loss")),
    "--class-weighting": ("class_weighting", dict(choices=tuple(CLASS_WEIGHTINGS),
                                                  help="pixel weights by class frequency")),
    "--oversample": ("oversample", dict(metavar="CSV",
                                        help="name,times lines: draw these pairs more often")),
    "--sampling": ("sampling", dict(choices=("image", "area"),
                                    help="draw each pair once per pass, or by its area in "
                                         "crops")),
    "--tfrecord-shards": ("tfrecord_shards", dict(type=non_negative_int,
                                                  help="read via N TFRecords")),
    "--early-stopping": ("early_stopping", dict(type=non_negative_int,
                                                help="patience in epochs, 0 = off")),
    "--init-from": ("init_from", dict(metavar="RUN_OR_MODEL",
                                      help="start from an earlier run's model or a bundled one, "
                                           "e.g. nuclei_dsb2018 (fine-tuning)")),
    "--seed": ("seed", dict(type=non_negative_int, help="random seed")),
    "--mixed-precision": ("mixed_precision", dict(
        choices=PRECISIONS, help="compute precision (auto: float16 with a GPU; on a CPU, "
                                 "bfloat16 for a plain U-Net where the CPU has it, else "
                                 "float32; on: bfloat16 on a CPU)")),
    "--jit-compile": ("jit_compile", dict(choices=("auto", "on", "off"),
                                          help="XLA compilation (auto: with a GPU)")),
    "--filters": ("model.filters", dict(type=positive_int, help="base filters")),
    "--depth": ("model.depth", dict(type=positive_int, help="poolings")),
    "--normalization": ("model.normalization", dict(choices=("batch", "group"),
                                                    help="normalization layers")),
    "--upsampling": ("model.upsampling", dict(choices=("transpose", "nearest", "bilinear"),
                                              help="decoder upsampling")),
    "--dropout": ("model.dropout", dict(type=float, help="dropout rate")),
    "--backbone": ("model.backbone", dict(choices=tuple(BACKBONES), metavar="NAME",
                                          help="a keras.applications encoder instead of the "
                                               "U-Net's: " + ", ".join(BACKBONES))),
    "--backbone-weights": ("model.backbone_weights",
                           dict(metavar="WEIGHTS", help="--backbone: imagenet (downloaded) or "
                                                        "a weights file (default: random)")),
    "--unfreeze-epoch": ("unfreeze_epoch", dict(type=positive_int, metavar="N",
                                                help="--freeze-encoder: train the encoder too "
                                                     "from epoch N")),
    "--unfreeze-lr-factor": ("unfreeze_lr_factor",
                             dict(type=positive_float,
                                  help="learning rate factor from --unfreeze-epoch")),
}


def add_parsers(add) -> None:
    """Adds `run` and `train` (`add(name, ...)` makes a subparser)."""
    from keras_unet.training.config import TrainConfig

    defaults = TrainConfig()
    run = add("run", help="the main job on a LabelMe dataset (default: the bundled sample)",
              description="Converts a LabelMe dataset, trains a U-Net, compares it with Otsu "
                          "baselines and exports verified TFLite models. A rerun reports the "
                          "results it has (--force redoes everything).")
    run.add_argument("--dataset", default=SAMPLE_DATASET,
                     help="folder of LabelMe JSON of nuclei (classes _background_, nucleus; "
                          "for other classes: labelme2masks, then train)")
    run.add_argument("--work-dir", default="runs/sample", help="where results go")
    run.add_argument("--epochs", type=positive_int, default=None,
                     # "%(default).0s" prints nothing; it keeps the formatter from
                     # appending "(default: None)".
                     help="training epochs (default: the sample recipe's)%(default).0s")
    run.add_argument("--force", action="store_true", help="redo a finished main job")
    run.set_defaults(func=run_main_job)

    tr = add("train", help="train a U-Net on a dataset folder",
             description="Trains a U-Net and writes a run folder. Rerunning the same command "
                         "continues an interrupted run, reports a finished one, and continues "
                         "it when --epochs grows.")
    tr.add_argument("--config", help="YAML/JSON config; flags override it")
    tr.add_argument("--recipe", choices=tuple(RECIPES),
                    help="start from the settings measured best for a kind of data and "
                         "machine (see keras_unet.training.recipes); flags override them")
    for flag, (key, kwargs) in TRAIN_FLAGS.items():
        kwargs = dict(kwargs)
        field = key.split(".", 1)[1] if key.startswith("model.") else key
        source = defaults.model if key.startswith("model.") else dataclasses.asdict(defaults)
        if source.get(field) is not None and "help" in kwargs:
            kwargs["help"] += f" (default: {source[field]})"
        tr.add_argument(flag, default=None, **kwargs)
    tr.add_argument("--freeze-encoder", action="store_true",
                    help="--backbone: keep the encoder's weights fixed (see --unfreeze-epoch)")
    tr.add_argument("--attention", action="store_true", help="attention gates")
    tr.add_argument("--residual", action="store_true", help="residual blocks")
    tr.add_argument("--input-normalization",
                    choices=("per_image", "per_image_percentile", "none"),
                    help="per_image: standardize each image inside the model (per-image "
                         "mean and std); per_image_percentile: that and, as more channels, "
                         "the image scaled by its 1st-99.8th percentiles (dim fluorescence); "
                         "none: the model takes pixels/255 (default: none)")
    tr.add_argument("--deterministic", action="store_true", help="reproducible input")
    tr.add_argument("--border-weights", action="store_true",
                    help="U-Net paper weights between touching objects (needs instances/)")
    tr.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    tr.add_argument("--force", action="store_true",
                    help="start over in a run folder that holds a run")
    tr.set_defaults(func=train)


def config_from_args(args):
    """The `TrainConfig` of `train`'s arguments (a config file or a recipe,
    then flags).

    Raises:
        ConfigError: If both a config file and a recipe are given.
    """
    from keras_unet.training.config import ConfigError, TrainConfig
    from keras_unet.training.recipes import recipe

    overrides, model = {}, {}
    for flag, (key, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if key.startswith("model."):
            model[key[6:]] = value
        else:
            overrides[key] = value
    for flag in ("attention", "residual", "freeze_encoder"):
        if getattr(args, flag):
            model[flag] = True
    if args.input_normalization:
        model["input_normalization"] = (None if args.input_normalization == "none"
                                        else args.input_normalization)
    if args.deterministic:
        overrides["deterministic"] = True
    if args.border_weights:
        overrides["border_weights"] = True
    if args.no_tensorboard:
        overrides["tensorboard"] = False
    if args.config and args.recipe:
        raise ConfigError(f"--recipe {args.recipe} with --config {args.config}: a config file "
                          "holds all its settings (a run's config.json its recipe's too); "
                          "give one of them")
    if args.recipe:
        base = TrainConfig.from_values(recipe(args.recipe), f"--recipe {args.recipe}")
    else:
        base = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    return dataclasses.replace(base, **overrides, model={**base.model, **model})


def train(args) -> int:
    """Runs `train`."""
    from keras_unet.evaluation.scores import format_object_scores, format_scores
    from keras_unet.training.train import train as train_run

    config = config_from_args(args)
    result = train_run(config, force=args.force)
    if result.already_finished:
        print(f"{result.run_dir}: this run finished before ({len(result.history.get('loss', []))}"
              " epochs); nothing was trained. Its validation scores:")
    else:
        print("validation scores (best checkpoint):")
    print(format_scores(result.scores))
    if result.scores.get("objects"):
        from keras_unet.evaluation.scores import ObjectScores

        print(format_object_scores(ObjectScores.from_dict(result.scores["objects"])))
    print(f"run folder: {result.run_dir} (checkpoints/best.keras, curves.png, log.csv)")
    if result.already_finished:
        print("To train longer, give more --epochs; to start over, add --force.")
    return 0


def run_main_job(args) -> int:
    """Runs the main job."""
    from keras_unet.quickstart import run_main_job as main_job

    dataset = None if args.dataset == SAMPLE_DATASET else args.dataset
    return main_job(dataset, args.work_dir, epochs=args.epochs, force=args.force)
