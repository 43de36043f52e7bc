"""The Keras callbacks of a training run: guard, validate, commit, report.

They run in this order at the end of every epoch:

1. `NanGuard` has stopped training at the first non-finite loss.
2. `Validation` scores the held-out images with the functions `evaluate`
   uses and adds `val_loss`, `val_iou`, `val_dice` (and `val_ap`,
   `val_f1` for instance models) to the epoch's logs.
3. `RunRecorder` commits the epoch to the run folder (`keras_unet.training.runs`),
   unless the guard tripped, and applies early stopping.
4. `EpochLine` prints one plain line per epoch (for log files, where
   Keras' progress bar would write terminal control codes).
"""

from __future__ import annotations

import math
import sys
import time

import keras
import numpy as np

from keras_unet.data.instances import boundary_target
from keras_unet.data.pairs import Dataset
from keras_unet.data.readers import read_image, read_instances
from keras_unet.evaluation.evaluate import evaluate_prediction, summarize
from keras_unet.evaluation.scores import ObjectScores, headline_scores
from keras_unet.inference.predict import Predictor, keras_predictor, predict_image
from keras_unet.training.runs import NAN_ADVICE, RunFolder, RunState


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
        if loss is not None and not math.isfinite(float(loss)) and self.message is None:
            self.message = (
                f"the loss became {float(loss)} at epoch {self.epoch + 1}, batch "
                f"{batch + 1}: training stopped, and this epoch was not saved (the run "
                f"folder keeps the last good epoch). {NAN_ADVICE}"
            )
            self.model.stop_training = True


class Validation(keras.callbacks.Callback):
    """Scores the validation images at the end of every epoch.

    The images are read once and kept in memory; each epoch predicts them
    whole (padded to the model's size multiple), as `evaluate` does, and
    adds to the logs:

    - `val_loss`: the training loss on the validation images;
    - `val_iou`, `val_dice`: IoU and Dice averaged over the classes but
      background (over every class in a dataset without `_background_`:
      mIoU), from the confusion matrix pooled over the images;
    - `val_ap`, `val_f1` (instance models, or datasets with instance masks):
      the object scores of `keras_unet.evaluation.scores`.

    Every worker of a multi-worker run scores the whole validation set
    itself, so no collective operation is needed here.

    Args:
        dataset: The validation pairs.
        channels: Image channels of the model.
        target: `"semantic"` or `"instances"`.
        objects: Also score objects (needs instance masks).
        boundary_width: Boundary width of the instance target (for the loss).
        object_size: The training objects' size (the run's
            `object_size.json`), which sets the smallest object an instance
            model's prediction keeps, as `evaluate` does.
    """

    def __init__(self, dataset: Dataset, *, channels: int, target: str, objects: bool,
                 boundary_width: int, object_size: dict | None = None):
        super().__init__()
        self.boundary_width = boundary_width
        self.object_size = object_size
        self.names = dataset.names
        self.target = target
        self.objects = objects and bool(dataset.instances)
        self.examples = []
        for index, (image_path, mask_path) in enumerate(zip(dataset.images, dataset.masks)):
            truth = dataset.read_mask(index)
            instances = (read_instances(dataset.instances[index])
                         if dataset.instances and (self.objects or target == "instances")
                         else None)
            self.examples.append((read_image(image_path, channels), truth, instances))
        self.scores = None
        self._predictors = {}  # one traced function per model scored

    def on_epoch_end(self, epoch, logs=None):
        self.scores = self.score(self.model)
        if logs is not None:
            logs.update({k: v for k, v in self.scores.items() if k.startswith("val_")})

    def score(self, model) -> dict:
        """Scores `model` on the validation images.

        Returns:
            `summarize` output plus the `val_*` log values.
        """
        predictor = self._predictor(model)
        n = len(self.names)
        matrix = np.zeros((n, n), np.int64)
        objects = ObjectScores() if self.objects else None
        losses, loss = [], probability_loss(model.loss)
        for image, truth, instances in self.examples:
            probs = predict_image(predictor, image)
            result = evaluate_prediction(probs, truth, n, target=self.target,
                                         true_instances=instances if self.objects else None,
                                         min_size=predictor.min_object_size())
            matrix += result.confusion
            if objects is not None:
                objects = objects.add(result.objects)
            if loss is not None:
                labels = truth if self.target != "instances" else boundary_target(
                    truth, instances, n, self.boundary_width)
                losses.append(float(loss(labels[None], probs[None])))
        scores = summarize(matrix, self.names, objects)
        iou, dice = headline_scores(scores)
        scores["val_iou"], scores["val_dice"] = iou or 0.0, dice or 0.0
        if losses:
            scores["val_loss"] = float(np.mean(losses))
        if objects is not None:
            scores["val_ap"], scores["val_f1"] = objects.mean_ap, objects.f1
        return scores


    def _predictor(self, model) -> Predictor:
        """A predictor of `model`, traced once (images of each size trace once)."""
        if id(model) not in self._predictors:
            self._predictors[id(model)] = keras_predictor(
                model, "validation", target=self.target, names=self.names,
                object_size=self.object_size)
        return self._predictors[id(model)]


def probability_loss(loss):
    """`loss` as it reads probabilities: the predictor applies a logits
    model's activation, so a `from_logits` loss is rebuilt without it.

    Args:
        loss: A compiled Keras loss, or `None`.

    Returns:
        `loss`, a copy with `from_logits=False`, or `None`.
    """
    if not getattr(loss, "from_logits", False):
        return loss
    return type(loss).from_config({**loss.get_config(), "from_logits": False})


class RunRecorder(keras.callbacks.Callback):
    """Commits every finished epoch to the run folder; stops early.

    Args:
        run: The run folder.
        state: The state to continue (epochs already done are kept).
        guard: The run's `NanGuard`: an epoch it stopped is not committed.
        examples_per_epoch: Training examples one epoch draws.
        patience: Early-stopping patience in epochs on the monitored score
            (0 disables).
    """

    def __init__(self, run: RunFolder, state: RunState, guard: NanGuard,
                 examples_per_epoch: int, patience: int = 0):
        super().__init__()
        self.run, self.state, self.guard = run, state, guard
        self.examples_per_epoch = examples_per_epoch
        self.patience = patience

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.message or epoch < self.state.epochs_done:
            return
        self.state.record(dict(logs or {}), self.examples_per_epoch)
        best = self.state.best_epoch if self.state.best_epoch is not None else -1
        if self.patience and self.state.epochs_done - 1 - best >= self.patience:
            self.state.finished = self.state.stopped_early = True
            self.model.stop_training = True
        self.run.commit(self.state, self.model)


class EpochLine(keras.callbacks.Callback):
    """Prints one plain line per epoch: losses, scores and time.

    Args:
        epochs: Total epochs of the run.
        stream: Where to print (default standard output).
    """

    def __init__(self, epochs: int, stream=None):
        super().__init__()
        self.epochs = epochs
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        for key in ("loss", "dice", "val_loss", "val_dice", "val_ap"):
            if key in logs:
                parts.append(f"{key} {float(logs[key]):.4f}")
        parts.append(f"{time.perf_counter() - self.start:.0f} s")
        print("  ".join(parts), file=self.stream, flush=True)
