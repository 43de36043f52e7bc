"""The configuration of a training run: `TrainConfig`, saved as `config.json`.

This module loads no TensorFlow, so the command line can show the defaults
in its help at once; the checks that need the Keras parts import them when
they run.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from keras_unet import files
from keras_unet.data.instances import BOUNDARY_WIDTH, TARGETS
from keras_unet.data.pairs import pair_name
from keras_unet.data.weights import CLASS_WEIGHTINGS
from keras_unet.errors import KerasUnetError
from keras_unet.models import pretrained
from keras_unet.training.precision import PRECISIONS

SAMPLINGS = ("image", "area")

# Settings that may change when a run is continued: they do not change what
# the finished epochs learned.
RESUMABLE = ("epochs", "early_stopping", "verbose", "tensorboard", "time_budget",
             "mixed_precision", "jit_compile", "deterministic", "init_from", "work_dir")
# Flags of the config keys, for messages (the CLI sets these keys).
FLAGS = {"data": "--data", "images_dir": "--images", "masks_dir": "--masks",
         "val_fraction": "--val-fraction", "crop_size": "--crop-size",
         "batch_size": "--batch-size", "steps_per_epoch": "--steps-per-epoch",
         "time_budget": "--time-budget", "init_from": "--init-from"}


class ConfigError(KerasUnetError, ValueError):
    """A configuration value that cannot be used; names the key and its flag."""


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as `config.json` in the run.

    Attributes:
        data: Dataset folder (`images/`, `masks/`, `labels.txt`).
        images_dir: Images folder of a plain folder pair (instead of `data`).
        masks_dir: Masks folder of a plain folder pair.
        labels: `labels.txt` path (default: the dataset's).
        foreground_value: Binary masks: the mask value of the foreground.
        ignore_index: A void mask value (CamVid's 11), ignored in training and
            scoring like 255 (`--ignore-index`).
        val_fraction: Share of pairs held out for validation (0 < f < 1).
        val_list: File of validation pairs, one per line: a pair's name
            (its mask's stem) or its image or mask file name (overrides
            `val_fraction`).
        work_dir: The run folder.
        target: `"semantic"` (class-id masks) or `"instances"` (adds a
            boundary class that separates touching objects; needs instance
            masks, see `keras_unet.data.instances`).
        boundary_width: Width in pixels of the boundary class of the
            instance target (each of two touching objects gives this much).
        channels: Image channels fed to the model (1 grey, 3 RGB).
        crop_size: Training crop size (a multiple of `2**depth`, 32 with a
            backbone).
        batch_size: Global batch size (split over GPUs/workers).
        epochs: Training epochs.
        steps_per_epoch: Steps per epoch; `None` is one pass over the
            training images (more steps means more random crops per epoch).
        time_budget: Minutes the training may take: the step time is
            measured first and the number of epochs (at most `epochs`)
            chosen to fit, so the learning-rate schedule ends in time.
        lr: Peak learning rate (Adam).
        schedule: `"cosine"` decay to 1 % over the run, or `"constant"`.
        loss: `"dice_ce"`, `"dice"`, `"cross_entropy"`, `"focal"`, `"tversky"`.
        class_weighting: `"none"`, `"median_frequency"` or
            `"sqrt_median_frequency"` (its square root): pixel weights by
            class frequency.
        oversample: A CSV file of `name,times` lines: each named training
            pair is drawn `times` times per pass over the training set (to
            show a rare kind of image, e.g. a stain seen in few images, more
            often); pairs not listed once.
        sampling: How often each training pair is drawn per pass: `"image"`
            once (then `oversample`), or `"area"` in proportion to its pixels,
            `round(H * W / crop_size**2)` times (at least once, times its
            `oversample` count), so that a large image is cropped as often as
            its area holds crops and every pixel is about as likely to be
            trained on, whatever the size of its image.
        border_weights: Add the U-Net paper's weight term between touching
            objects (`w0 = 10`, `sigma = 5` px); needs instance masks.
        tfrecord_shards: Write the training split as this many TFRecord
            shards in the run folder and read them with `interleave` (0 reads
            the image files directly).
        early_stopping: Patience in epochs on the validation score (0
            disables).
        unfreeze_epoch: With `model: {backbone: ..., freeze_encoder: true}`,
            make the encoder trainable from this epoch on (`None` never).
        unfreeze_lr_factor: Learning-rate factor after unfreezing.
        init_from: A run folder or `.keras` model to start from (fine-tuning
            on a grown dataset), or a bundled model's name (`nuclei_dsb2018`,
            see `keras_unet.models.pretrained`); its label map must be this dataset's, or
            a prefix of it (the output head is then new).
        model: Keyword arguments of `build_unet` (default: 32 filters,
            depth 4; a mapping given here replaces the default as a whole).
        augment: Keyword arguments of `keras_unet.data.augment.Augment`.
        seed: Seed of the split, weights, shuffling and augmentation.
        deterministic: Reproducible input order and augmentation.
        mixed_precision: Compute precision, one of
            `keras_unet.training.precision.PRECISIONS` (`"auto"`: float16 with a
            GPU; on a CPU, bfloat16 for a plain U-Net where the CPU has
            bfloat16 instructions, else float32).
        jit_compile: `"auto"` (on with a GPU), `"on"` or `"off"`.
        tensorboard: Write TensorBoard logs.
        verbose: Progress output: 1 a Keras progress bar on a terminal (one
            line per epoch otherwise), 2 a line per epoch, 0 none.
    """

    data: str | None = None
    images_dir: str | None = None
    masks_dir: str | None = None
    labels: str | None = None
    foreground_value: int | None = None
    ignore_index: int | None = None
    val_fraction: float = 0.2
    val_list: str | None = None
    work_dir: str = "runs/train"
    target: str = "semantic"
    boundary_width: int = BOUNDARY_WIDTH
    channels: int = 3
    crop_size: int = 256
    batch_size: int = 8
    epochs: int = 50
    steps_per_epoch: int | None = None
    time_budget: float | None = None
    lr: float = 1e-3
    schedule: str = "cosine"
    loss: str = "dice_ce"
    class_weighting: str = "none"
    oversample: str | None = None
    sampling: str = "image"
    border_weights: bool = False
    tfrecord_shards: int = 0
    early_stopping: int = 20
    unfreeze_epoch: int | None = None
    unfreeze_lr_factor: float = 0.1
    init_from: str | None = None
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

        Relative paths in the file are relative to the file's folder.

        Raises:
            ConfigError: If the file cannot be read or parsed, or has
                unknown keys (naming them and the file).
        """
        path = Path(path)
        text = _read_text(path, "config file")
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                values = yaml.safe_load(text) or {}
            else:
                values = json.loads(text)
        except Exception as err:  # yaml and json raise their own types
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'}"
                              f" ({first})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got "
                              f"{type(values).__name__}")
        return cls.from_values({**absolute_paths(values, path.parent), **overrides}, str(path))

    @classmethod
    def from_values(cls, values: dict, source: str) -> "TrainConfig":
        """A config from a mapping of its keys (not yet validated).

        Args:
            values: Config keys and their values.
            source: Where the values came from (a file, a flag), named in
                the error.

        Returns:
            The config.

        Raises:
            ConfigError: On unknown keys, naming them and `source`.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the config as JSON, with absolute paths (usable from anywhere)."""
        values = absolute_paths(dataclasses.asdict(self))
        files.write_text(path, json.dumps(values, indent=2) + "\n")

    def validation_names(self) -> list[str] | None:
        """The pair names of `val_list`, or `None` without one.

        Raises:
            ConfigError: If the file cannot be read or is not UTF-8 text.
        """
        if not self.val_list:
            return None
        return _read_text(self.val_list, "validation list").split()

    def repeats(self, names: list[str]) -> list[int]:
        """Times per pass of each pair (see `oversample`), in `names` order.

        Raises:
            ConfigError: If the file cannot be read or is not UTF-8 CSV
                text, a line is not `name,times` with a whole number >= 0,
                or names no pair.
        """
        if not self.oversample:
            return [1] * len(names)
        text = _read_text(self.oversample, "oversampling list")
        try:
            rows = [r for r in csv.reader(text.splitlines()) if r and r[0] != "name"]
        except csv.Error as err:
            raise ConfigError(f"{self.oversample}: not a CSV of `name,times` ({err})") from None
        times, known = {}, set(names)
        for line, row in enumerate(rows, 1):
            if len(row) != 2 or not row[1].strip().isdigit():
                raise ConfigError(f"{self.oversample}: line {line} must be `name,times` with "
                                  f"a whole number of times, got {','.join(row)!r}")
            times[pair_name(row[0].strip(), known)] = int(row[1])
            if int(row[1]) > MAX_OVERSAMPLE:
                raise ConfigError(f"{self.oversample}: line {line}: {row[1].strip()} times is "
                                  f"more than {MAX_OVERSAMPLE} (every draw of a pass is "
                                  "held in the shuffle buffer)")
        unknown = sorted(set(times) - set(names))
        if unknown:
            raise ConfigError(f"{self.oversample}: names no training pair: {unknown[:5]}")
        return [times.get(name, 1) for name in names]

    def validate(self) -> None:
        """Checks every value, naming the key (and its command-line flag).

        Raises:
            ConfigError: On the first bad value.
        """
        # The Keras parts, imported here so that the module itself stays light.
        from keras_unet.data.augment import Augment
        from keras_unet.models.model import build_unet, check_options, size_multiple
        from keras_unet.training.losses import LOSSES

        if not (self.data or (self.images_dir and self.masks_dir)):
            raise ConfigError("no training data: give --data (a dataset folder), or both "
                              "--images and --masks (a plain image/mask pair of folders)")

        def fail(key, expected):
            flag = f" ({FLAGS.get(key, '--' + key.replace('_', '-'))})"
            raise ConfigError(f"{key}{flag} must be {expected}, got {getattr(self, key)!r}")

        def integer(key, minimum, optional=False):
            value = getattr(self, key)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                fail(key, f"an integer >= {minimum}")

        for key, minimum in (("batch_size", 1), ("epochs", 1), ("crop_size", 1),
                             ("boundary_width", 1),
                             ("early_stopping", 0), ("tfrecord_shards", 0), ("seed", 0)):
            integer(key, minimum)
        if self.boundary_width > MAX_BOUNDARY_WIDTH:
            fail("boundary_width", f"at most {MAX_BOUNDARY_WIDTH} pixels (wider boundaries "
                 "leave objects no interior to seed them)")
        integer("steps_per_epoch", 1, optional=True)
        integer("ignore_index", 0, optional=True)
        if self.ignore_index is not None and self.ignore_index > 255:
            fail("ignore_index", "a mask value 0..255")
        integer("unfreeze_epoch", 1, optional=True)
        if not (isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 1):
            fail("val_fraction", "a fraction between 0 and 1 (exclusive)")
        for key in ("lr", "unfreeze_lr_factor"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                fail(key, "a positive number")
        if self.time_budget is not None and not (
                isinstance(self.time_budget, (int, float)) and not isinstance(
                    self.time_budget, bool)
                and math.isfinite(self.time_budget) and self.time_budget > 0):
            fail("time_budget", "a positive, finite number of minutes")
        choices = {"target": TARGETS, "channels": (1, 3), "schedule": ("cosine", "constant"),
                   "loss": tuple(LOSSES), "class_weighting": tuple(CLASS_WEIGHTINGS),
                   "sampling": SAMPLINGS,
                   "mixed_precision": PRECISIONS,
                   "jit_compile": ("auto", "on", "off"), "verbose": (0, 1, 2)}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                fail(key, "one of " + ", ".join(map(repr, allowed)))
        if self.jit_compile == "on" and self.deterministic:
            raise ConfigError("jit_compile on (--jit-compile) and deterministic "
                              "(--deterministic) exclude each other: Keras compiles with XLA "
                              "only without deterministic kernels")
        if not isinstance(self.model, dict) or not isinstance(self.augment, dict):
            raise ConfigError("model and augment must be mappings of options")
        options = {
            "model": [p.name for p in inspect.signature(build_unet).parameters.values()
                      if p.kind is p.KEYWORD_ONLY],
            "augment": [f.name for f in dataclasses.fields(Augment)],
        }
        for section, known in options.items():
            unknown = sorted(set(getattr(self, section)) - set(known))
            if unknown:
                raise ConfigError(f"{section}: unknown options {unknown}; known: {known}")
        try:
            check_options((None, None, self.channels), **self.model)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model: {err}") from None
        try:
            Augment(**self.augment)
        except ValueError as err:
            raise ConfigError(f"augment: {err}") from None
        multiple = size_multiple(self.model.get("depth", 4), self.model.get("backbone"))
        if self.crop_size % multiple:
            below = self.crop_size // multiple * multiple
            fail("crop_size", f"a multiple of {multiple} (2**depth) such as "
                 f"{below or multiple} or {below + multiple}")


def _read_text(path: str | os.PathLike, what: str) -> str:
    """The text of a config file, or of a list file that a config names.

    Raises:
        ConfigError: If it cannot be read or is not UTF-8 text, naming it
            and `what` it is.
    """
    try:
        # utf-8-sig: a byte-order mark (as Excel writes CSV) is not text.
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the {what} ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the {what} is not UTF-8 text") from None


PATH_KEYS = ("data", "images_dir", "masks_dir", "labels", "val_list", "init_from",
             "oversample", "work_dir")
# Wider boundaries leave typical objects no interior (and cost time).
MAX_BOUNDARY_WIDTH = 16
# The most times one pair may be drawn per pass (the shuffle buffer holds them).
MAX_OVERSAMPLE = 1000


def absolute_paths(values: dict, base: str | os.PathLike | None = None) -> dict:
    """Config values with their paths made absolute.

    Args:
        values: Config keys and values.
        base: The folder relative paths start from (default: the working
            directory).

    Returns:
        A copy of `values`; an `init_from` that names a bundled model
        (`keras_unet.models.pretrained`) stays a name.
    """
    base, values = Path(base or "."), dict(values)
    for key in PATH_KEYS:
        value = values.get(key)
        if not value or not isinstance(value, str):
            continue
        if not (key == "init_from" and pretrained.is_bundled_name(value, base)):
            values[key] = str((base / value).resolve())
    return values


