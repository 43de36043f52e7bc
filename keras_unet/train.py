"""Training: from a dataset folder to a trained U-Net in a run folder.

A run folder holds everything about one training run::

    run/
      config.json           the full configuration (reload it with --config)
      labels.txt            class names, index = class id
      checkpoints/best.keras  best validation Dice
      checkpoints/last.keras  end of the last epoch
      backup/               state for resuming after an interruption
      log.csv               per-epoch losses and metrics
      tensorboard/          TensorBoard logs
      curves.png            training curves
      summary.json          validation IoU/Dice per class

Running `train` again with the same run folder resumes after an
interruption: same epoch, same weights and optimizer state (Keras'
`BackupAndRestore`).

Hardware: the GPU is used when TensorFlow sees one, with mixed precision and
XLA there; several GPUs use `MirroredStrategy`; several machines use
`MultiWorkerMirroredStrategy`, configured by the `TF_CONFIG` environment
variable of each worker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_unet import files
from keras_unet.data import Augment, class_weights_from_counts, make_dataset, write_tfrecords
from keras_unet.dataset import Dataset, check_dataset, load_dataset, split_dataset
from keras_unet.evaluate import confusion_from_model, format_scores, per_class_scores
from keras_unet.labels import IGNORE_ID, labels_text
from keras_unet.losses import get_loss
from keras_unet.metrics import Dice, IoU
from keras_unet.model import build_unet, size_multiple

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (e.g. NaN loss)."""


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as `config.json` in the run.

    Attributes:
        data: Dataset folder (`images/`, `masks/`, `labels.txt`).
        images_dir: Images folder of a plain folder pair (instead of `data`).
        masks_dir: Masks folder of a plain folder pair.
        labels: `labels.txt` path (default: the dataset's).
        foreground_value: Binary masks: the mask value of the foreground.
        val_fraction: Share of pairs held out for validation.
        val_list: File of validation pair names, one per line (overrides
            `val_fraction`).
        work_dir: The run folder.
        channels: Image channels fed to the model (1 grey, 3 RGB).
        crop_size: Training crop size (a multiple of `2**depth`, 32 with a
            backbone).
        batch_size: Global batch size (split over GPUs/workers).
        epochs: Training epochs.
        steps_per_epoch: Steps per epoch; `None` is one pass over the
            training images (more steps means more random crops per epoch).
        lr: Peak learning rate (Adam).
        schedule: `"cosine"` decay to 1 % over the run, or `"constant"`.
        loss: `"dice_ce"`, `"dice"`, `"cross_entropy"`, `"focal"`, `"tversky"`.
        class_weighting: `"none"` or `"median_frequency"` (pixel weights).
        border_weights: Add the U-Net paper's weight term between touching
            objects (`w0 = 10`, `sigma = 5` px); needs instance masks.
        tfrecord_shards: Write the training split as this many TFRecord
            shards in the run folder and read them with `interleave` (0 reads
            the image files directly).
        early_stopping: Patience in epochs on validation Dice (0 disables).
        unfreeze_epoch: With `model: {backbone: ..., freeze_encoder: true}`,
            make the encoder trainable from this epoch on (`None` never).
        unfreeze_lr_factor: Learning-rate factor after unfreezing.
        model: Keyword arguments of `build_unet`.
        augment: Keyword arguments of `keras_unet.data.Augment`.
        seed: Seed of the split, weights, shuffling and augmentation.
        deterministic: Reproducible input order and augmentation.
        mixed_precision: `"auto"` (on with a GPU), `"on"` or `"off"`.
        jit_compile: `"auto"` (on with a GPU), `"on"` or `"off"`.
        tensorboard: Write TensorBoard logs.
        verbose: Keras progress output (1 bar, 2 a line per epoch, 0 none).
    """

    data: str | None = None
    images_dir: str | None = None
    masks_dir: str | None = None
    labels: str | None = None
    foreground_value: int | None = None
    val_fraction: float = 0.2
    val_list: str | None = None
    work_dir: str = "runs/train"
    channels: int = 3
    crop_size: int = 256
    batch_size: int = 8
    epochs: int = 50
    steps_per_epoch: int | None = None
    lr: float = 1e-3
    schedule: str = "cosine"
    loss: str = "dice_ce"
    class_weighting: str = "none"
    border_weights: bool = False
    tfrecord_shards: int = 0
    early_stopping: int = 20
    unfreeze_epoch: int | None = None
    unfreeze_lr_factor: float = 0.1
    model: dict = field(default_factory=lambda: {"filters": 32, "depth": 4})
    augment: dict = field(default_factory=dict)
    seed: int = 0
    deterministic: bool = False
    mixed_precision: str = "auto"
    jit_compile: str = "auto"
    tensorboard: bool = True
    verbose: int = 1

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> "TrainConfig":
        """Loads a YAML or JSON config; `overrides` win over the file.

        Raises:
            ValueError: On unknown keys, naming them and the file.
        """
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {unknown}; known: {sorted(known)}")
        return cls(**{**values, **overrides})

    def save(self, path: str | os.PathLike) -> None:
        """Writes the config as JSON."""
        files.write_text(path, json.dumps(dataclasses.asdict(self), indent=2) + "\n")


@dataclass
class TrainResult:
    """What `train` produced.

    Attributes:
        model: The trained model (best checkpoint).
        run_dir: The run folder.
        history: Per-epoch logs of this call (`{"loss": [...], ...}`).
        scores: Per-class validation scores (see `per_class_scores`).
        initial_epoch: Epoch training started at (> 0 after a resume).
    """

    model: keras.Model
    run_dir: Path
    history: dict
    scores: dict
    initial_epoch: int


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.message = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.message = (
                f"the loss became {float(loss)} at epoch {self.epoch + 1}, batch "
                f"{batch + 1}: training stopped. Lower the learning rate (--lr), check "
                "that the masks hold only class ids of the label map, or turn mixed "
                "precision off (--mixed-precision off)."
            )
            self.model.stop_training = True


class _EpochCounter(keras.callbacks.Callback):
    """Records the first epoch run (to detect a resume)."""

    def __init__(self):
        super().__init__()
        self.first_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.first_epoch is None:
            self.first_epoch = epoch


def select_strategy() -> tf.distribute.Strategy:
    """The `tf.distribute` strategy for the hardware at hand.

    Returns:
        `MultiWorkerMirroredStrategy` when `TF_CONFIG` is set,
        `MirroredStrategy` with several GPUs, else the default strategy.
    """
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _auto(setting: str, default: bool) -> bool:
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"expected 'auto', 'on' or 'off', got {setting!r}")
    return default if setting == "auto" else setting == "on"


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def _work_around_keras_multi_worker(model) -> None:
    """Lets Keras 3 `fit()` run under `MultiWorkerMirroredStrategy`.

    Keras 3.15 has two problems there (tensorflow#72388): `fit()` first
    builds the model from a batch averaged with `strategy.reduce()`, which
    this strategy rejects ("Attempt to convert a value (PerReplica...)"), and
    it averages each step's scalar logs over axis 0, which scalars lack
    ("Invalid reduction dimension 0"). Forgetting the strategy the model
    remembers makes `fit()` take it from the surrounding scope and build
    lazily; giving the logs a length-1 axis makes the average well defined.
    Gradients are all-reduced across the workers as usual.
    """
    model._distribute_strategy = None

    def with_axis(step):
        def wrapped(data):
            return {k: tf.reshape(v, [1]) for k, v in step(data).items()}
        return wrapped

    model.train_step = with_axis(model.train_step)
    model.test_step = with_axis(model.test_step)


def load_training_data(config: TrainConfig) -> tuple[Dataset, Dataset, dict]:
    """Lists, checks and splits the dataset of a config.

    Returns:
        `(train, val, pixel_counts)`.

    Raises:
        keras_unet.dataset.DatasetError: On bad input, naming the file.
    """
    dataset = load_dataset(
        config.data,
        images_dir=config.images_dir,
        masks_dir=config.masks_dir,
        labels=config.labels,
        foreground_value=config.foreground_value,
    )
    counts = check_dataset(dataset)
    val_names = None
    if config.val_list:
        val_names = Path(config.val_list).read_text().split()
    train, val = split_dataset(dataset, config.val_fraction, config.seed, val_names)
    return train, val, counts


def train(config: TrainConfig, extra_callbacks: list | None = None) -> TrainResult:
    """Trains a U-Net as configured and writes the run folder.

    Args:
        config: The configuration.
        extra_callbacks: More Keras callbacks, run after keras-unet's own.

    Returns:
        A `TrainResult` with the best model and validation scores.

    Raises:
        keras_unet.dataset.DatasetError: On bad input data.
        TrainingError: If the loss becomes NaN.
    """
    keras.utils.set_random_seed(config.seed)
    run_dir = Path(config.work_dir)
    train_set, val_set, counts = load_training_data(config)
    names = train_set.names
    strategy = select_strategy()
    chief = _is_chief(strategy)
    out_dir = run_dir if chief else run_dir / f"worker-{strategy.cluster_resolver.task_id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "config.json")
    files.write_text(out_dir / "labels.txt", labels_text(names))

    gpu = bool(tf.config.list_logical_devices("GPU"))
    policy = "mixed_float16" if _auto(config.mixed_precision, gpu) else "float32"
    multiple = size_multiple(config.model.get("depth", 4), config.model.get("backbone"))
    weights = None
    if config.class_weighting == "median_frequency":
        weights = class_weights_from_counts(counts, len(names))
        log.info("class weights: %s", dict(zip(names, np.round(weights, 3))))
    elif config.class_weighting != "none":
        raise ValueError(
            f"class_weighting={config.class_weighting!r}: 'none' or 'median_frequency'"
        )
    records = None
    if config.tfrecord_shards:
        shard_dir = run_dir / "tfrecords"
        if chief and not list(shard_dir.glob("train-*.tfrecord")):
            write_tfrecords(train_set, shard_dir, config.tfrecord_shards)
        records = str(shard_dir / "train-*.tfrecord")
    train_ds = make_dataset(
        train_set, channels=config.channels, training=True, batch_size=config.batch_size,
        crop_size=config.crop_size, pad_multiple=multiple,
        augmentations=Augment(**config.augment), class_weights=weights,
        border_weights=config.border_weights, records=records,
        seed=config.seed, deterministic=config.deterministic,
    )
    val_ds = make_dataset(
        val_set, channels=config.channels, training=False, batch_size=1,
        pad_multiple=multiple, deterministic=config.deterministic,
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_ds, val_ds = train_ds.with_options(options), val_ds.with_options(options)
    steps = config.steps_per_epoch or math.ceil(len(train_set.images) / config.batch_size)
    if config.steps_per_epoch:
        train_ds = train_ds.repeat()

    outputs = 1 if len(names) == 2 else len(names)
    if config.schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule={config.schedule!r}: 'cosine' or 'constant'")

    def compile_model(model, peak_lr, epochs):
        lr = peak_lr
        if config.schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(peak_lr, epochs * steps, alpha=0.01)
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss=get_loss(config.loss, ignore_class=IGNORE_ID),
            metrics=[IoU(outputs, ignore_class=IGNORE_ID), Dice(outputs, ignore_class=IGNORE_ID)],
            jit_compile=_auto(config.jit_compile, gpu),
        )

    # Epoch ranges: one phase, or frozen encoder then unfrozen at a lower rate.
    phases = [(0, config.epochs)]
    if config.unfreeze_epoch and config.model.get("freeze_encoder"):
        phases = [(0, config.unfreeze_epoch), (config.unfreeze_epoch, config.epochs)]
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:  # the layers keep the policy they were built with
        with strategy.scope():
            model = build_unet((None, None, config.channels), outputs, **config.model)
            compile_model(model, config.lr, phases[0][1])
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    checkpoints = out_dir / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    guard, counter = NanGuard(), _EpochCounter()
    callbacks = [
        guard,
        counter,
        keras.callbacks.BackupAndRestore(str(out_dir / "backup")),
        keras.callbacks.ModelCheckpoint(
            str(checkpoints / "best.keras"), monitor="val_dice", mode="max", save_best_only=True
        ),
        keras.callbacks.ModelCheckpoint(str(checkpoints / "last.keras")),
        keras.callbacks.CSVLogger(str(out_dir / "log.csv"), append=True),
    ]
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_dice", mode="max", patience=config.early_stopping,
            restore_best_weights=False,
        ))
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "tensorboard")))
    callbacks += extra_callbacks or []
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _work_around_keras_multi_worker(model)
    history = {}
    for start, end in phases:
        with strategy.scope():
            if start:
                log.info("epoch %d: unfreezing the encoder", start + 1)
                model.get_layer("encoder").trainable = True
                compile_model(model, config.lr * config.unfreeze_lr_factor, end - start)
            fitted = model.fit(
                train_ds, validation_data=val_ds, initial_epoch=start, epochs=end,
                steps_per_epoch=steps, callbacks=callbacks, verbose=config.verbose,
            )
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(values)
        if guard.message:
            raise TrainingError(guard.message)
        if model.stop_training:
            break

    if chief:
        plot_curves(out_dir / "log.csv", out_dir / "curves.png")
    best = checkpoints / "best.keras"
    model = keras.models.load_model(best) if best.is_file() else model
    scores = per_class_scores(confusion_from_model(model, val_ds, len(names)), names)
    files.write_text(out_dir / "summary.json", json.dumps(scores, indent=2) + "\n")
    log.info("validation scores (best checkpoint):\n%s", format_scores(scores))
    return TrainResult(model, out_dir, history, scores, counter.first_epoch or 0)


def plot_curves(log_csv: str | os.PathLike, path: str | os.PathLike) -> None:
    """Plots loss and Dice per epoch from a Keras CSV log into a PNG.

    Args:
        log_csv: `CSVLogger` output.
        path: PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.genfromtxt(log_csv, delimiter=",", names=True)
    rows = np.atleast_1d(rows)
    epochs = rows["epoch"] + 1
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "dice")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in rows.dtype.names:
                ax.plot(epochs, rows[prefix + key], style, label=prefix + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
