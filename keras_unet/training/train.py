"""Training: from a dataset folder to a trained U-Net in a run folder.

`train(config)` checks the data (every pair read once, as training will
read it), builds the model and trains it, committing every epoch to the run
folder (`keras_unet.training.runs`: atomic, flushed, never a non-finite model).

Running `train` again on the same run folder:

- after an interruption, continues at the last epoch done, with its
  weights, optimizer state and position in the input stream;
- on a finished run with the same number of epochs, trains nothing and
  returns its results; with more epochs, continues from where it ended;
- with a configuration that differs in anything but the number of epochs
  (and a few settings that do not change what is learned), refuses, naming
  the difference: `force=True` (`--force`) starts over, or use another
  run folder.

Hardware: the GPU is used when TensorFlow sees one, with mixed precision and
XLA there (on a CPU, bfloat16 for a plain U-Net where the CPU has bfloat16
instructions, else float32: `keras_unet.training.precision`);
several GPUs use `MirroredStrategy`; several machines use
`MultiWorkerMirroredStrategy`, configured by the `TF_CONFIG` environment
variable of each worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_unet import files
from keras_unet.data.augment import Augment
from keras_unet.data.instances import dataset_object_size
from keras_unet.data.labels import IGNORE_ID, labels_text
from keras_unet.data.pairs import (
    Dataset,
    check_dataset,
    load_dataset,
)
from keras_unet.data.pipeline import (
    area_repeats,
    make_dataset,
    write_tfrecords,
)
from keras_unet.data.readers import image_size, read_instances
from keras_unet.data.weights import (
    CLASS_WEIGHTINGS,
    border_weight_maps,
    class_weights_from_counts,
    target_pixel_counts,
)
from keras_unet.errors import KerasUnetError
from keras_unet.inference.predict import (
    InferenceError,
    find_labels,
    load_keras_model,
    model_config,
    model_file,
    output_count,
    target_from_outputs,
)
from keras_unet.models import pretrained
from keras_unet.models.metadata import output_kind
from keras_unet.models.model import build_unet, size_multiple
from keras_unet.training.callbacks import EpochLine, NanGuard, RunRecorder, Validation
from keras_unet.training.config import RESUMABLE, ConfigError, TrainConfig, absolute_paths
from keras_unet.training.losses import get_loss
from keras_unet.training.metrics import Dice, IoU
from keras_unet.training.precision import training_policy
from keras_unet.training.runs import RunFolder, RunFolderError, RunState, record_split, run_split

log = logging.getLogger(__name__)

class TrainingError(KerasUnetError, RuntimeError):
    """Training stopped for a reason the user must act on (e.g. NaN loss)."""


@dataclass
class TrainResult:
    """What `train` produced.

    Attributes:
        model: The trained model (best checkpoint).
        run_dir: The run folder.
        history: Per-epoch logs of the whole run (`{"loss": [...], ...}`).
        scores: Validation scores of the best checkpoint (`summary.json`).
        initial_epoch: Epoch training started at (> 0 after a resume).
        already_finished: The run had finished before: nothing was trained.
    """

    model: keras.Model
    run_dir: Path
    history: dict
    scores: dict
    initial_epoch: int
    already_finished: bool = False


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
    Gradients are all-reduced across the workers as usual. (Validation runs
    in `keras_unet.training.callbacks.Validation`, on each worker, not through
    `evaluate()`.)
    """
    model._distribute_strategy = None

    def with_axis(step):
        def wrapped(data):
            return {k: tf.reshape(v, [1]) for k, v in step(data).items()}
        return wrapped

    model.train_step = with_axis(model.train_step)


def load_training_data(config: TrainConfig) -> tuple[Dataset, Dataset]:
    """Lists, checks and splits the dataset of a config.

    Returns:
        `(train, val)`.

    Raises:
        keras_unet.data.pairs.DatasetError: On bad input, naming the files.
    """
    dataset = load_dataset(
        config.data,
        images_dir=config.images_dir,
        masks_dir=config.masks_dir,
        labels=config.labels,
        foreground_value=config.foreground_value,
        ignore_index=config.ignore_index,
    )
    check_dataset(dataset, instances=config.target == "instances" or config.border_weights)
    return run_split(config, dataset)


def draws_per_pass(config: TrainConfig, train_set: Dataset) -> list[int]:
    """Times each training pair is drawn per pass over the training set.

    Args:
        config: The run's configuration (`oversample`, `sampling`, `crop_size`).
        train_set: The training split.

    Returns:
        One count per training pair: its `oversample` count, times its area
        in crops with `sampling="area"` (see
        `keras_unet.data.pipeline.area_repeats`).

    Raises:
        ConfigError: On a bad oversampling list, or one that draws no pair.
        keras_unet.data.readers.ReadError: If an image cannot be read.
    """
    repeats = config.repeats(train_set.stems)
    if not any(repeats):
        raise ConfigError(f"{config.oversample}: every training pair is drawn 0 times: "
                          "nothing to train on")
    if config.sampling == "area":
        sizes = [image_size(path) for path in train_set.images]
        repeats = [r * a for r, a in zip(repeats, area_repeats(sizes, config.crop_size))]
        drawn = [r for r in repeats if r]
        log.info("sampling by area: %d crops per pass from %d images (%d to %d per image)",
                 sum(drawn), len(drawn), min(drawn), max(drawn))
    return repeats


def prepare_run(run: RunFolder, config: TrainConfig, force: bool = False) -> RunState | None:
    """Decides how a run folder is used: a new run, or one to continue.

    Args:
        run: The run folder.
        config: The configuration asked for.
        force: Start over, deleting the folder's training outputs.

    Returns:
        The committed state to continue from, or `None` for a new run.

    Raises:
        RunFolderError: If the folder holds a run of another configuration,
            or files of a run but no state, or more epochs than asked for.
    """
    if force:
        run.clear()
        return None
    state = run.read_state()
    if state is None:
        if run.holds_a_run():
            raise RunFolderError(
                f"{run.path} holds files of a training run but no state.json (an older "
                "keras-unet, or a run that never finished an epoch): use --force to start "
                "over, or another --work-dir")
        return None
    if run.config.is_file():
        saved = TrainConfig.from_file(run.config)
        different = _differences(saved, config)
        if different:
            raise RunFolderError(
                f"{run.path} holds a run with another configuration ({'; '.join(different)}):"
                " use --force to start over, or another --work-dir")
    if config.epochs < state.epochs_done:
        raise RunFolderError(
            f"{run.path} has already trained {state.epochs_done} epochs, more than the "
            f"{config.epochs} asked for: ask for more epochs to continue, or use --force to "
            "start over")
    return state


def _differences(saved: TrainConfig, asked: TrainConfig) -> list[str]:
    """The settings that differ between two configs (except `RESUMABLE`)."""
    a, b = (absolute_paths(dataclasses.asdict(c)) for c in (saved, asked))
    return [f"{key}: {a[key]!r} before, {b[key]!r} now" for key in a
            if key not in RESUMABLE and a[key] != b[key]]


def train(
    config: TrainConfig, extra_callbacks: list | None = None, *, force: bool = False
) -> TrainResult:
    """Trains a U-Net as configured and writes the run folder.

    Args:
        config: The configuration.
        extra_callbacks: More Keras callbacks, run after keras-unet's own.
        force: Start over in a folder that holds another run.

    Returns:
        A `TrainResult` with the best model and validation scores.

    Raises:
        ConfigError: On a bad configuration value.
        keras_unet.data.pairs.DatasetError: On bad input data.
        keras_unet.training.runs.RunFolderError: If the run folder cannot be used as
            asked (see `prepare_run`), or another process is training in it.
        TrainingError: If the loss becomes NaN (the run folder keeps the last
            good epoch).
    """
    config.validate()
    # Read before the run folder holds anything.
    earlier = load_init_model(config.init_from, config.model) if config.init_from else None
    strategy = select_strategy()
    chief = _is_chief(strategy)
    run_dir = Path(config.work_dir)
    run = RunFolder(run_dir if chief else run_dir / f"worker-{strategy.cluster_resolver.task_id}")
    with run.lock(), _op_determinism(config.deterministic):  # one process per folder
        return _train_locked(config, run, run_dir, strategy, chief, extra_callbacks, force,
                             earlier)


@contextlib.contextmanager
def _op_determinism(enabled: bool):
    """Deterministic TensorFlow kernels for one run, then as before.

    TensorFlow's switch is global to the process and Keras refuses XLA while
    it is on, so it must not outlive the run that asked for it.
    """
    from tensorflow.python.framework import config as tf_config  # the off switch

    before = tf_config.is_op_determinism_enabled()
    if enabled:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not before:
            tf_config.disable_op_determinism()


def _train_locked(config: TrainConfig, run: RunFolder, run_dir: Path, strategy, chief: bool,
                  extra_callbacks: list | None, force: bool,
                  earlier: InitModel | None) -> TrainResult:
    """`train` in its run folder, which this process holds."""
    state = prepare_run(run, config, force)
    if state is not None and state.finished and config.epochs <= state.epochs_done:
        log.info("%s: finished before (%d epochs): nothing to train", run.path,
                 state.epochs_done)
        validation = None
        if not run.summary.is_file():  # killed before it was written: score again
            log.warning("%s: summary.json is missing; scoring the best model again", run.path)
            _, val_set = load_training_data(config)
            validation = Validation(val_set, channels=config.channels, target=config.target,
                                    objects=bool(val_set.instances),
                                    boundary_width=config.boundary_width,
                                    object_size=_recorded_object_size(run))
        return _result(run, state, initial_epoch=state.epochs_done, validation=validation,
                       already_finished=True)

    keras.utils.set_random_seed(config.seed)
    train_set, val_set = load_training_data(config)
    if chief:
        record_split(config, train_set, val_set)
    names = train_set.names
    outputs = output_count(len(names), config.target)
    run.path.mkdir(parents=True, exist_ok=True)
    config.save(run.config)
    files.write_text(run.labels, labels_text(names))
    if chief:
        _record_object_size(run, train_set)

    gpu = bool(tf.config.list_logical_devices("GPU"))
    policy = training_policy(config.mixed_precision, gpu=gpu,
                             backbone=config.model.get("backbone"))
    log.info("compute precision: %s", policy)
    multiple = size_multiple(config.model.get("depth", 4), config.model.get("backbone"))
    weights = None
    power = CLASS_WEIGHTINGS[config.class_weighting]
    if power is not None:
        classes = len(names) + (config.target == "instances")
        counts = target_pixel_counts(train_set, len(names), config.target,
                                     config.boundary_width)
        weights = class_weights_from_counts(counts, classes, power)
        log.info("class weights: %s", np.round(weights, 3).tolist())
    records = None
    if config.tfrecord_shards:
        shard_dir = run_dir / "tfrecords"
        if chief and not list(shard_dir.glob("train-*.tfrecord")):
            write_tfrecords(train_set, shard_dir, config.tfrecord_shards)
        records = str(shard_dir / "train-*.tfrecord")
    repeats = draws_per_pass(config, train_set)
    steps = config.steps_per_epoch or math.ceil(sum(repeats) / config.batch_size)
    border = None
    if config.border_weights:
        log.info("computing the border weight maps of %d training images",
                 len(train_set.images))
        border = border_weight_maps(train_set, weights, progress=config.verbose > 0)

    def training_stream(start: int) -> tf.data.Dataset:
        ds = make_dataset(
            train_set, channels=config.channels, training=True, batch_size=config.batch_size,
            crop_size=config.crop_size, pad_multiple=multiple,
            augmentations=Augment.for_model(
                config.augment, config.model.get("input_normalization")),
            class_weights=weights,
            border_weights=border, target=config.target,
            boundary_width=config.boundary_width, records=records,
            seed=config.seed, deterministic=config.deterministic, start=start,
            repeats=repeats,
        )
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        return ds.with_options(options)

    validation = Validation(val_set, channels=config.channels, target=config.target,
                            objects=bool(val_set.instances),
                            boundary_width=config.boundary_width,
                            object_size=_recorded_object_size(run))
    monitor = "val_ap" if config.target == "instances" else "val_dice"

    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:  # the layers keep the policy they were built with
        with strategy.scope():
            model = build_unet((None, None, config.channels), outputs, **config.model)
    except (ValueError, TypeError) as err:  # what only a build finds (the weights file)
        raise ConfigError(f"model: {err}") from None
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    if state is None and earlier is not None:
        initialize_from(model, earlier, names, config.target)

    def compile_model(peak_lr, total_epochs):
        lr = peak_lr
        if config.schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(peak_lr, total_epochs * steps,
                                                        alpha=0.01)
        foreground = [1] if outputs == 1 else list(range(1, outputs))
        scored = dict(ignore_class=IGNORE_ID, from_logits=output_kind(model) == "logits")
        with strategy.scope():
            model.compile(
                optimizer=keras.optimizers.Adam(lr),
                loss=get_loss(config.loss, **scored),
                metrics=[IoU(outputs, class_ids=foreground, **scored),
                         Dice(outputs, class_ids=foreground, **scored)],
                # Keras runs XLA only without op determinism.
                jit_compile=_auto(config.jit_compile, gpu) and not config.deterministic,
            )

    backup = None
    if state is None:
        epochs = config.epochs
        if config.time_budget:
            epochs = _epochs_in_budget(config, model, compile_model, training_stream, steps,
                                       validation)
        state = RunState(epochs=epochs, monitor=monitor)
    else:
        if state.finished or not config.time_budget:  # a budgeted run keeps its epochs
            state.epochs = max(config.epochs, state.epochs_done)
        state.finished = state.stopped_early = False
        backup = _backup_of(run, state)  # checked before anything is touched
        run.remove_leftovers()
        run.publish(state)  # finishes what a killed process left undone
    start_epoch = state.epochs_done
    phases = _phases(config, state.epochs)
    current = next(i for i, (_, end) in enumerate(phases)
                   if start_epoch < end or i == len(phases) - 1)
    if current:
        model.get_layer("encoder").trainable = True
    compile_model(*_phase_lr(config, phases, current))
    if start_epoch:
        _restore(model, backup)
        if start_epoch < state.epochs:
            log.info("%s: continuing at epoch %d of %d", run.path, start_epoch + 1,
                     state.epochs)
        else:  # killed between the last epoch and the scores
            log.info("%s: every epoch (%d) was trained; scoring the run", run.path,
                     state.epochs)

    guard = NanGuard()
    recorder = RunRecorder(run, state, guard, steps * config.batch_size,
                           config.early_stopping)
    interactive = config.verbose == 1 and sys.stdout.isatty()
    callbacks = [guard, validation, recorder]
    if config.verbose and not interactive:
        callbacks.append(EpochLine(state.epochs))
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run.tensorboard)))
    callbacks += extra_callbacks or []
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _work_around_keras_multi_worker(model)
    for index in range(current, len(phases)):
        start, end = phases[index]
        if index > current:
            log.info("epoch %d: unfreezing the encoder", start + 1)
            model.get_layer("encoder").trainable = True
            compile_model(*_phase_lr(config, phases, index))
        try:
            with strategy.scope():
                model.fit(
                    training_stream(state.examples_seen), initial_epoch=state.epochs_done,
                    epochs=end, steps_per_epoch=steps, callbacks=callbacks,
                    verbose=1 if interactive else 0, shuffle=False,  # the stream shuffles
                )
        except RunFolderError as err:
            raise TrainingError(str(err)) from None
        if guard.message:
            raise TrainingError(guard.message)
        if model.stop_training:
            break
    state.finished = True
    run.write_state(state)
    return _result(run, state, initial_epoch=start_epoch, validation=validation,
                   plot=chief)


def _record_object_size(run: RunFolder, train_set: Dataset) -> None:
    """Writes the training objects' size to the run (`object_size.json`), which
    `predict --object-size` rescales new images to; once, as the split it is
    measured on is fixed for the run (`split.json`)."""
    if run.object_size.is_file():
        return
    masks = (train_set.read_mask(i) for i in range(len(train_set.images)))
    instances = map(read_instances, train_set.instances) if train_set.instances else None
    size = dataset_object_size(masks, instances, has_background=train_set.has_background)
    if size is not None:
        files.write_text(run.object_size, json.dumps(size) + "\n")
        log.info("training objects: median diameter %.1f px (10th-90th percentile %.1f-%.1f)",
                 size["median_diameter"], *size["range"])


def _recorded_object_size(run: RunFolder) -> dict | None:
    """The run's `object_size.json`, or `None` where it has none (yet)."""
    try:
        return json.loads(run.object_size.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _phases(config: TrainConfig, epochs: int) -> list[tuple[int, int]]:
    """Epoch ranges: one phase, or a frozen encoder then unfrozen."""
    if config.unfreeze_epoch and config.model.get("freeze_encoder") and (
            config.unfreeze_epoch < epochs):
        return [(0, config.unfreeze_epoch), (config.unfreeze_epoch, epochs)]
    return [(0, epochs)]


def _phase_lr(config: TrainConfig, phases, index: int) -> tuple[float, int]:
    """`(peak learning rate, epochs)` of phase `index`."""
    start, end = phases[index]
    factor = config.unfreeze_lr_factor if index else 1.0
    return config.lr * factor, end - start


def _backup_of(run: RunFolder, state: RunState) -> Path | None:
    """The checkpoint `state.json` names for a run to continue from.

    Raises:
        keras_unet.training.runs.RunFolderError: If it is missing, saying what to do.
    """
    if not state.backup:
        return None
    backup = run.path / state.backup
    if not backup.is_file():
        raise RunFolderError(
            f"{backup}: the checkpoint of epoch {state.epochs_done} that {run.state.name} "
            "names is missing (deleted or moved?): put it back to continue the run, or start "
            "over with --force")
    return backup


def _restore(model, backup: Path) -> None:
    """Loads committed weights and optimizer state into the compiled `model`.

    The backup's weights file is read into the model as it is compiled for
    this run, optimizer included: a mixed-precision run's loss-scale
    optimizer (its scale and counters beside Adam's moments) comes back
    whole, which rebuilding the optimizer from the saved config would not.

    Raises:
        keras_unet.training.runs.RunFolderError: If the backup does not fit the model.
    """
    model.optimizer.build(model.trainable_variables)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(backup)
        except (ValueError, OSError) as err:
            raise RunFolderError(f"{backup}: does not fit the model ({str(err)[:300]})") from None
    skipped = [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
    if skipped:
        raise RunFolderError(f"{backup}: its optimizer state does not fit the model "
                             f"({skipped[0][:300]})")


def _result(run: RunFolder, state: RunState, *, initial_epoch: int, validation=None,
            plot: bool = True, already_finished: bool = False) -> TrainResult:
    """Loads the best model, scores it (once) and plots the curves."""
    with warnings.catch_warnings():
        # A mixed-precision model's saved loss-scale optimizer does not fit the
        # plain one Keras rebuilds from the config; scoring needs neither.
        warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
        model = keras.models.load_model(run.best if run.best.is_file() else run.last)
    if validation is not None:
        scores = validation.score(model)
        scores = {k: v for k, v in scores.items() if not k.startswith("val_")}
        files.write_text(run.summary, json.dumps(scores, indent=2) + "\n")
    else:
        scores = json.loads(run.summary.read_text(encoding="utf-8"))
    if plot and state.history:
        plot_curves(run.log, run.curves)
    history = {}
    for row in state.history:
        for key, value in row.items():
            if key != "epoch":
                history.setdefault(key, []).append(value)
    return TrainResult(model, run.path, history, scores, initial_epoch, already_finished)


def _epochs_in_budget(config, model, compile_model, training_stream, steps, validation) -> int:
    """Epochs that fit the time budget, measured on the model itself.

    Times a few training steps on a copy of the model (so the run itself
    starts from its initial weights), one validation pass and one save.
    """
    probe = keras.models.clone_model(model)
    probe.compile(optimizer=keras.optimizers.Adam(config.lr),
                  loss=get_loss(config.loss, ignore_class=IGNORE_ID),
                  jit_compile=model.jit_compile)
    stream = iter(training_stream(0))
    probe.train_on_batch(*next(stream))  # tracing
    count = 5
    started = time.perf_counter()
    for _ in range(count):
        probe.train_on_batch(*next(stream))
    step = (time.perf_counter() - started) / count
    validation.score(probe)  # tracing
    started = time.perf_counter()
    validation.score(probe)
    validate = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        probe.save(Path(folder) / "probe.keras")  # an epoch's commit saves the model
        save = time.perf_counter() - started
    per_epoch = steps * step + validate + save
    budget = config.time_budget * 60
    epochs = max(1, min(config.epochs, int(budget // per_epoch)))
    log.info("time budget %g min: %.2f s per step, %.1f s per validation -> %d epochs of "
             "%d steps (%.0f s each)", config.time_budget, step, validate, epochs, steps,
             per_epoch)
    return epochs


# The `build_unet` options an earlier model's weights depend on: fine-tuning
# needs the same (dropout, freezing and initializers may change).
WEIGHT_OPTIONS = ("filters", "depth", "convs_per_block", "kernel_size", "padding",
                  "normalization", "upsampling", "attention", "residual",
                  "input_normalization", "backbone")


def _other_build_options(recorded: dict, options: dict) -> dict:
    """`{key: (recorded value, this value)}` of the `WEIGHT_OPTIONS` where this
    run's `build_unet` options (defaults filled in) differ from the ones an
    earlier run or bundled model recorded."""
    defaults = {key: parameter.default
                for key, parameter in inspect.signature(build_unet).parameters.items()}
    pairs = {key: (recorded.get(key, defaults[key]), options.get(key, defaults[key]))
             for key in WEIGHT_OPTIONS}
    return {key: pair for key, pair in pairs.items() if pair[0] != pair[1]}


@dataclass(frozen=True)
class InitModel:
    """A model to fine-tune from (`--init-from`), read before the run starts.

    Attributes:
        source: What `--init-from` named (a bundled name resolved).
        path: Its `.keras` file.
        model: The loaded model.
        names: Its class names (`labels.txt` beside it), or `None`.
        recorded: What its run's `config.json` or its card records
            (`keras_unet.inference.predict.model_config`).
    """

    source: Path
    path: Path
    model: keras.Model
    names: list[str] | None
    recorded: dict


def load_init_model(source: str | os.PathLike, options: dict) -> InitModel:
    """Reads a model to fine-tune, and checks that it was built with `options`.

    `train` calls this before the run folder is written, so a wrong path, a
    damaged file or other model options leave nothing behind.

    Args:
        source: A run folder (its `best.keras`), a `.keras` file, or the
            name of a bundled model (`keras_unet.models.pretrained`).
        options: This run's `build_unet` options (`TrainConfig.model`).

    Returns:
        The `InitModel`.

    Raises:
        ConfigError: If the file is missing or cannot be read as a Keras
            model, or naming each of the `WEIGHT_OPTIONS` that differs from
            what the earlier run's `config.json` or the bundled model's
            card records (nothing is checked where neither records them).
    """
    source = pretrained.resolve(source)
    try:
        path = model_file(source)
    except InferenceError as err:
        raise ConfigError(f"--init-from: {err}") from None
    if not path.is_file():
        raise ConfigError(f"--init-from {source}: no such file or folder (a .keras file, a "
                          "run folder or a bundled model name)")
    recorded = model_config(path)
    differ = (_other_build_options(recorded["model"], options)
              if isinstance(recorded.get("model"), dict) else {})
    if differ:
        raise ConfigError(
            f"--init-from {source}: it was built with "
            + ", ".join(f"{key}={old!r}" for key, (old, _) in differ.items())
            + ", this model with "
            + ", ".join(f"{key}={new!r}" for key, (_, new) in differ.items())
            + "; build this one with the same model options (the flags of those names, "
            f"e.g. --{next(iter(differ)).replace('_', '-')}, or config key model)")
    try:
        model = load_keras_model(path)
        names, _ = find_labels(path)
    except InferenceError as err:
        raise ConfigError(f"--init-from: {err}") from None
    return InitModel(source, path, model, names, recorded)


def initialize_from(model, earlier: InitModel, names: list[str], target: str) -> None:
    """Starts `model` from the weights of an earlier model (fine-tuning).

    Args:
        model: The new model (same build options as the earlier one).
        earlier: The model to start from (`load_init_model`).
        names: This dataset's class names.
        target: This run's target.

    Raises:
        ConfigError: If the earlier model's label map is not this one or a
            prefix of it, or its layers differ (other build options;
            `load_init_model` names them where the earlier run or card
            records them).
    """
    source, path, earlier_names = earlier.source, earlier.path, earlier.names
    if earlier_names is not None:
        if earlier_names != names[:len(earlier_names)]:
            raise ConfigError(
                f"--init-from {source}: its classes {earlier_names} are not this dataset's "
                f"{names} (nor a prefix of them): the class ids would mean other things")
    earlier_target = earlier.recorded.get("target") or target_from_outputs(
        earlier.model.output_shape[-1], earlier_names)
    # The head is reused only where every output channel means the same.
    same_head = earlier_names == names and earlier_target == target
    for layer in model.layers:
        if not layer.weights or (layer.name == "head_conv" and not same_head):
            continue
        try:
            old = earlier.model.get_layer(layer.name)
        except ValueError:
            raise ConfigError(f"--init-from {source}: it has no layer {layer.name!r}; build "
                              "the new model with the same model options") from None
        shapes = [tuple(w.shape) for w in old.weights]
        if shapes == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(old.get_weights())
        elif layer.name != "head_conv":
            raise ConfigError(f"--init-from {source}: layer {layer.name!r} has weights of "
                              f"shapes {shapes}, the new model "
                              f"{[tuple(w.shape) for w in layer.weights]}; use the same "
                              "model options (filters, depth, ...)")
    if same_head:
        log.info("initialized from %s", path)
    elif earlier_names is None:
        log.warning("initialized from %s with a new output head: it has no label map beside "
                    "it (labels.txt), so what its outputs mean cannot be checked", path)
    else:
        log.warning("initialized from %s with a new output head (%s target, classes %s; it "
                    "had the %s target, classes %s): the output channels start untrained",
                    path, target, names, earlier_target, earlier_names)


def plot_curves(log_csv: str | os.PathLike, path: str | os.PathLike) -> None:
    """Plots loss and Dice per epoch from the run's `log.csv` into a PNG.

    Args:
        log_csv: The run's log (one row per epoch).
        path: PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.genfromtxt(log_csv, delimiter=",", names=True)
    rows = np.atleast_1d(rows)
    epochs = rows["epoch"] + 1
    keys = ["loss", "dice"] + (["ap"] if "val_ap" in rows.dtype.names else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4))
    for ax, key in zip(axes, keys):
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
