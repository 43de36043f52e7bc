"""The run folder: what a training run writes, and how a rerun continues it.

::

    run/
      config.json             the configuration (reload it with --config)
      labels.txt              class names, index = class id
      state.json              the commit record: epochs done, history, best
      backup/epoch-NNNN.keras model and optimizer after the last epoch done
      checkpoints/best.keras  the epoch with the best validation score
      checkpoints/last.keras  the last epoch done
      log.csv                 one row per epoch
      curves.png              loss and Dice per epoch
      summary.json            validation scores of best.keras
      split.json              the training and validation pairs, by name
      object_size.json        the training objects' median diameter and range
      .lock                   held by the training process using the folder

An epoch counts as done once `state.json` says so. At the end of an epoch
the model is saved to a new backup file, then `state.json` is replaced, both
atomically and flushed to disk; only then are `last.keras`, `best.keras`
(second names of the backup file) and `log.csv` brought up to date from the
state. A process killed at any moment leaves every file whole: at worst the
last epoch is not done yet, and the rerun repeats it and redoes the
derived files. A model with non-finite weights is never committed.

`run_split` gives a run its training and validation pairs, the same on every
rerun; `evaluation_pairs` finds the pairs a run's model is evaluated on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_unet import files
from keras_unet.data.pairs import (
    Dataset,
    DatasetError,
    load_dataset,
    split_by_names,
    split_dataset,
)
from keras_unet.errors import KerasUnetError
from keras_unet.inference.predict import RUN_BEST_MODEL, RUN_CONFIG
from keras_unet.training.config import ConfigError, TrainConfig

log = logging.getLogger(__name__)

STATE_VERSION = 1
# What to try when training diverges.
NAN_ADVICE = ("Lower the learning rate (--lr), check that the masks hold only class ids of "
              "the label map, or turn mixed precision off (--mixed-precision off); rerunning "
              "the command continues from the last good epoch.")


class RunFolderError(KerasUnetError, RuntimeError):
    """A run folder that cannot be used as asked; says what to do."""


@dataclass
class RunState:
    """What a run has done, as committed in `state.json`.

    Attributes:
        epochs: Epochs the run was asked for.
        epochs_done: Epochs done and committed.
        examples_seen: Training examples drawn from the input stream.
        history: One row per epoch done (`{"epoch": 0, "loss": ...}`).
        monitor: The validation score that picks the best epoch.
        best_epoch: Epoch (0-based) of `best.keras`, or `None`.
        best_value: Its score.
        finished: The run ended (all epochs, early stopping or time budget).
        stopped_early: It ended by early stopping or the time budget.
        backup: Path of the backup checkpoint, relative to the run folder.
        version: Format version of this record.
    """

    epochs: int
    epochs_done: int = 0
    examples_seen: int = 0
    history: list[dict] = field(default_factory=list)
    monitor: str = "val_dice"
    best_epoch: int | None = None
    best_value: float | None = None
    finished: bool = False
    stopped_early: bool = False
    backup: str | None = None
    version: int = STATE_VERSION

    def record(self, logs: dict, examples: int) -> bool:
        """Adds the epoch just trained; returns whether it is the best so far.

        Args:
            logs: Keras epoch logs (losses and metrics, validation included).
            examples: Training examples this epoch drew from the stream.
        """
        row = {"epoch": self.epochs_done}
        row.update({k: _number(v) for k, v in logs.items() if k != "epoch"})
        self.history.append(row)
        self.epochs_done += 1
        self.examples_seen += examples
        value = row.get(self.monitor)
        better = value is not None and math.isfinite(value) and (
            self.best_value is None or value > self.best_value)
        if better:
            self.best_epoch, self.best_value = row["epoch"], value
        return better


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class RunFolder:
    """Paths of a run folder and the commit protocol (see the module docstring).

    Args:
        path: The run folder.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config = self.path / RUN_CONFIG
        self.labels = self.path / "labels.txt"
        self.state = self.path / "state.json"
        self.backups = self.path / "backup"
        self.best = self.path / RUN_BEST_MODEL
        self.checkpoints = self.best.parent
        self.last = self.checkpoints / "last.keras"
        self.log = self.path / "log.csv"
        self.curves = self.path / "curves.png"
        self.summary = self.path / "summary.json"
        self.object_size = self.path / "object_size.json"
        self.tensorboard = self.path / "tensorboard"
        self.lock_file = self.path / ".lock"
        self.split = self.path / "split.json"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the folder for one training process (an OS file lock).

        The lock goes with the process: a killed run leaves no stale lock.
        The lock file says who holds it. A folder this call created and the
        run left empty (bad data found before any file was written) is
        removed again.

        Raises:
            RunFolderError: If another process holds the folder, naming it.
        """
        import fcntl

        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.lock_file.read_text(encoding="utf-8", errors="replace").strip()
            os.close(fd)
            raise RunFolderError(
                f"{self.path} is in use by another training run ({holder or 'unknown'}): "
                "wait for it to end, or give another --work-dir") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (f"process {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode())
            yield
        finally:
            os.close(fd)  # releases the lock
            if created and [p.name for p in self.path.iterdir()] == [self.lock_file.name]:
                with contextlib.suppress(OSError):
                    self.lock_file.unlink()
                    self.path.rmdir()

    def read_state(self) -> RunState | None:
        """The committed state, or `None` for a folder where no epoch was done.

        Raises:
            RunFolderError: If `state.json` cannot be read.
        """
        if not self.state.is_file():
            return None
        try:
            values = json.loads(self.state.read_text(encoding="utf-8"))
            return RunState(**values)
        except (OSError, ValueError, TypeError) as err:
            raise RunFolderError(
                f"{self.state}: cannot be read ({err}); it was not written by keras-unet "
                "(or was edited). Use --force to start over, or another --work-dir."
            ) from None

    def holds_a_run(self) -> bool:
        """Whether the folder holds files of a training run."""
        return any(p.exists() for p in (self.state, self.best, self.last, self.log,
                                        self.backups))

    def commit(self, state: RunState, model) -> None:
        """Saves the model as the new backup, commits `state`, then publishes.

        Args:
            state: The state after the epoch just done (its `backup` is set
                here).
            model: The Keras model (with its optimizer).

        Raises:
            RunFolderError: If a weight is not finite (nothing is written).
        """
        bad = [w.path for w in model.weights if not np.isfinite(np.asarray(w)).all()]
        if bad:
            raise RunFolderError(
                f"epoch {state.epochs_done + 1} ended with non-finite weights ({bad[:3]}): "
                f"it was not saved, the run folder keeps the last good epoch. {NAN_ADVICE}")
        name = f"epoch-{state.epochs_done:04d}.keras"
        files.atomic_write(self.backups / name, model.save, durable=True)
        state.backup = f"{self.backups.name}/{name}"
        self.write_state(state)
        self.publish(state)

    def write_state(self, state: RunState) -> None:
        """Writes `state.json` atomically and flushed (the commit point)."""
        text = json.dumps(dataclasses.asdict(state), indent=1, allow_nan=True) + "\n"
        files.atomic_write(self.state, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                           durable=True)

    def publish(self, state: RunState) -> None:
        """Brings `last.keras`, `best.keras` and `log.csv` up to `state`.

        Idempotent: a rerun calls it first, to finish what a killed process
        left undone after its last commit.
        """
        if state.backup:
            backup = self.path / state.backup
            files.atomic_link(backup, self.last)
            if state.best_epoch is not None and state.best_epoch == state.epochs_done - 1:
                files.atomic_link(backup, self.best)
            for old in self.backups.glob("epoch-*.keras"):
                if old != backup:
                    old.unlink(missing_ok=True)
        files.write_text(self.log, history_csv(state.history))

    def remove_leftovers(self) -> None:
        """Deletes the temporary files a killed process left (`.*.tmp*`)."""
        for folder in (self.path, self.backups, self.checkpoints):
            for leftover in folder.glob(".*.tmp*"):
                leftover.unlink(missing_ok=True)

    def clear(self) -> None:
        """Removes every training output (for `--force`): state, backups,
        checkpoints, log, curves, summary, TensorBoard logs."""
        for path in (self.state, self.log, self.curves, self.summary, self.split):
            path.unlink(missing_ok=True)
        for folder in (self.backups, self.checkpoints, self.tensorboard):
            shutil.rmtree(folder, ignore_errors=True)


def run_split(config, dataset: Dataset) -> tuple[Dataset, Dataset]:
    """The training and validation pairs of a run, as it recorded them.

    A run records its split by pair name (`split.json`) when it starts and
    keeps it: pairs added to the dataset later are left out (with a
    warning), so a resumed run, `evaluate --split val` and an export never
    score a training pair as validation. Without a record for this dataset
    the split is drawn as `split_dataset` draws it.

    Args:
        config: The run's `TrainConfig` (`work_dir`, data paths, split
            settings).
        dataset: The dataset's pairs now.

    Returns:
        `(train, val)`.

    Raises:
        DatasetError: If every validation pair of the record is gone.
    """
    record = _read_split(RunFolder(config.work_dir).split, _data_key(config))
    if record is None:
        return split_dataset(dataset, config.val_fraction, config.seed,
                             config.validation_names())
    train, val, added, gone = split_by_names(dataset, record["train"], record["val"])
    if added or gone:
        log.warning("%s: the dataset changed since the run began (%d pairs added, %d gone): "
                    "the run keeps its split (%d training, %d validation pairs); start a new "
                    "run (--force, or another --work-dir) to train on the new pairs",
                    config.work_dir, len(added), len(gone), len(train.images),
                    len(val.images))
    if not val.images:
        raise DatasetError(f"{config.work_dir}: every validation pair the run recorded is gone "
                           "from the dataset; start a new run (--force)")
    return train, val


def record_split(config, train: Dataset, val: Dataset) -> None:
    """Writes the run's split (`split.json`) unless it is already recorded."""
    path = RunFolder(config.work_dir).split
    if not path.is_file():
        files.write_text(path, json.dumps({"data": _data_key(config), "train": train.stems,
                                           "val": val.stems}, indent=1) + "\n")


def _data_key(config) -> str:
    """Which dataset a config reads, as absolute paths."""
    return "|".join(str(Path(p).resolve()) if p else ""
                    for p in (config.data, config.images_dir, config.masks_dir))


def _read_split(path: Path, data: str) -> dict | None:
    """A recorded split of `data`, or `None` (none, another dataset's, or unreadable)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("data") != data:
        return None
    return record


def history_csv(history: list[dict]) -> str:
    """The history rows as CSV text (columns in order of first appearance)."""
    return files.csv_text(history, ("epoch",))


def evaluation_pairs(
    model_path: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    masks_dir: str | os.PathLike | None = None,
    labels=None,
    foreground_value: int | None = None,
    split: str | None = None,
    ignore_index: int | None = None,
    model_names: list[str] | None = None,
) -> tuple[Dataset, str]:
    """The pairs to evaluate a model on, and which split they are.

    A model from a run folder (`run/checkpoints/best.keras`) knows its
    dataset and its train/validation split: without `data`, the run's
    dataset is used, and on the run's dataset the default split is the
    held-out validation pairs (scoring the training images would flatter
    the model). Any other dataset is scored whole.

    Args:
        model_path: The model file.
        data: Dataset folder (default: the run's).
        images_dir: Images of a plain folder pair (with `masks_dir`).
        masks_dir: Masks of a plain folder pair.
        labels: `labels.txt` path or class names (default: the dataset's).
        foreground_value: Binary masks: the mask value of the foreground.
        split: `"val"`, `"train"` or `"all"` (default: see above).
        ignore_index: A void mask value, scored as ignore (default: the
            run's).
        model_names: The model's class names: the label map of a dataset
            that has none of its own (binary masks), and the one a dataset's
            own map must equal.

    Returns:
        `(dataset, description)`, e.g. `"validation split of runs/x"`.

    Raises:
        keras_unet.data.pairs.DatasetError: If no dataset is given and the model
            has no run, a split is asked for a dataset that is not the
            run's, or the dataset's classes are not the model's.
    """
    model_path = Path(model_path)
    run_folder = next((f for f in (model_path.parent, model_path.parent.parent)
                       if RunFolder(f).config.is_file()), None)
    config = None
    if run_folder is not None:
        try:
            config = TrainConfig.from_file(RunFolder(run_folder).config)
        except ConfigError:
            config = None
    if data is None and images_dir is None and masks_dir is None:
        if config is None:
            raise DatasetError(f"{model_path} is not in a run folder: give --data, or "
                               "--images and --masks")
        data, images_dir, masks_dir = config.data, config.images_dir, config.masks_dir
        labels = labels if labels is not None else config.labels
        foreground_value = config.foreground_value
    if ignore_index is None and config is not None:
        ignore_index = config.ignore_index
    dataset = load_dataset(data, images_dir=images_dir, masks_dir=masks_dir, labels=labels,
                           foreground_value=foreground_value, ignore_index=ignore_index,
                           default_labels=model_names)
    if model_names is not None and dataset.names != list(model_names):
        raise DatasetError(
            f"{labels or data or masks_dir}: the dataset's classes {dataset.names} are not the "
            f"model's {list(model_names)} ({model_path}): the class ids would mean other "
            "things; evaluate it on a dataset of its classes")
    same = config is not None and _same_pairs(dataset, config)
    split = split or ("val" if same else "all")
    if split == "all":
        return dataset, f"all {len(dataset.images)} pairs"
    if not same:
        raise DatasetError(f"--split {split}: the dataset is not the one {model_path} was "
                           "trained on, so it has no train/validation split; use --split all")
    train, val = run_split(config, dataset)
    chosen = val if split == "val" else train
    kind = "validation" if split == "val" else "training"
    return chosen, f"{kind} split of {run_folder}"


def _same_pairs(dataset: Dataset, config) -> bool:
    """Whether `dataset` lists the pairs of the run's dataset."""
    try:
        theirs = load_dataset(config.data, images_dir=config.images_dir,
                              masks_dir=config.masks_dir, labels=dataset.names,
                              foreground_value=config.foreground_value,
                              ignore_index=config.ignore_index)
    except DatasetError:
        return False
    resolve = lambda paths: [str(Path(p).resolve()) for p in paths]  # noqa: E731
    return resolve(theirs.images) == resolve(dataset.images)
