"""Running trained models on images: `.keras` or `.tflite`, whole or by tiles.

Models take float32 images in [0, 1] (pixel / 255 for 8-bit images, / 65535
for 16-bit), NHWC. A `Predictor` returns per-class probabilities: the
outputs of a model built with `output_activation=None` (logits) get their
softmax (a sigmoid for one channel) first, so masks, objects, confidence
and test-time averaging read every model alike.

Large images are cut into overlapping tiles (half a tile apart by default)
and stitched with Gaussian weights (sigma = 1/8 of the tile, as nnU-Net
does), so tile borders, where a convolutional network sees less context,
count little. At most `batch_size` tiles are in memory at once.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from keras_unet import files, register_keras_objects
from keras_unet.data.instances import label_instances, min_object_size, semantic_classes
from keras_unet.data.labels import BACKGROUND_LABEL, LabelMapError, read_labels
from keras_unet.data.readers import IMAGE_SUFFIXES, ReadError, read_image, save_instances, save_mask
from keras_unet.data.visualize import overlay
from keras_unet.errors import KerasUnetError
from keras_unet.inference.confidence import (
    UNSURE_HIGH,
    UNSURE_LOW,
    UNSURE_SHARE,
    uncertain_share,
)
from keras_unet.inference.preannotate import pixel_confidence
from keras_unet.inference.scale import predict_at_object_size
from keras_unet.logs import native_output_silenced
from keras_unet.models import pretrained
from keras_unet.models.metadata import output_kind, read_metadata

log = logging.getLogger(__name__)

# Flips of NHWC batches by name (`keras_unet.data.augment.Augment.test_time_flips`).
FLIP_AXES = {"horizontal": (2,), "vertical": (1,), "both": (1, 2)}
# What flip test-time augmentation assumes of a model that records no training
# settings: horizontal flips suit microscopy and street scenes alike.
DEFAULT_FLIPS = ("horizontal",)
# Where a training run folder keeps its settings and its best model
# (`keras_unet.training.runs.RunFolder` is laid out by these names).
RUN_CONFIG = "config.json"
RUN_BEST_MODEL = "checkpoints/best.keras"


class InferenceError(KerasUnetError, ValueError):
    """An image or model that cannot be used; names the file."""


@dataclass
class Predictor:
    """A loaded model as a function from image batches to probabilities.

    Attributes:
        run: `fn(batch)`: float32 `(B, H, W, C)` in [0, 1] -> float32
            `(B, H, W, K)`.
        input_size: Fixed `(height, width)`, or `None` for any size.
        channels: Image channels the model takes.
        multiple: Sizes must be multiples of this (2**depth).
        path: The model file.
        target: `"semantic"`, or `"instances"` for models that predict the
            boundary class too (see `keras_unet.data.instances`).
        names: Class names by id, when known.
        object_size: The training objects' size, where the model records
            it: `{"median_diameter": px, "range": [low, high]}` (see
            `keras_unet.inference.scale`).
        flips: The flips of `FLIP_AXES` its training showed it, which flip
            test-time augmentation uses (see `trained_flips`).
        ignore_index: The void mask value of its training data
            (`--ignore-index`, CamVid's 11), where it records one: the mask
            value `evaluate` reads as ignore unless told another.
    """

    run: Callable[[np.ndarray], np.ndarray]
    input_size: tuple[int, int] | None
    channels: int
    multiple: int
    path: str
    target: str = "semantic"
    names: list[str] | None = None
    object_size: dict | None = None
    flips: tuple[str, ...] = DEFAULT_FLIPS
    ignore_index: int | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(np.asarray(batch, np.float32))

    def min_object_size(self, factor: float = 1.0) -> int:
        """The smallest object kept of a prediction made at resize `factor`
        (`predict_scaled`): relative to the training objects for an instance
        model that records them (`keras_unet.data.instances.min_object_size`),
        else `MIN_OBJECT_SIZE` pixels."""
        return min_object_size(self.object_size if self.target == "instances" else None, factor)


def model_multiple(model) -> int:
    """Input sizes a keras-unet model takes are multiples of this.

    Every decoder level doubles the resolution once (`dec<level>_up`), so
    the multiple is 2 to the number of decoder levels (`2**depth`, or 32
    with a backbone); 1 for other models.
    """
    ups = [layer for layer in model.layers if layer.name.startswith("dec")
           and layer.name.endswith("_up")]
    return 2 ** len(ups)


def load_keras_model(path: str | os.PathLike, compile: bool = False):
    """Loads a `.keras` file, with an error that names it when it is not one.

    A model trained in mixed precision comes back computing in float32
    (`keras_unet.models.model.float32_copy`), as inference and export use it,
    unless `compile` asks for its training configuration.

    Args:
        path: The `.keras` file.
        compile: Restore the training configuration too.

    Returns:
        The `keras.Model`.

    Raises:
        InferenceError: If the file is missing, truncated or not a Keras
            model.
    """
    path = Path(path)
    if not path.is_file():
        raise InferenceError(f"{path}: model file not found")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise InferenceError(f"{path}: not a valid .keras model file (truncated or damaged: "
                             "a .keras file is a zip archive, and this one is not whole)")
    import keras

    from keras_unet.models.model import float32_copy

    register_keras_objects()

    try:
        model = keras.models.load_model(path, compile=compile)
    except Exception as err:  # Keras raises many types for a damaged file
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise InferenceError(
            f"{path}: not a valid .keras model file ({type(err).__name__}: {reason})"
        ) from None
    return model if compile else float32_copy(model)


def model_file(source: str | os.PathLike) -> Path:
    """The model file a user names: a training run folder's best model
    (`checkpoints/best.keras`), a bundled model's `.keras` file
    (`keras_unet.models.pretrained`), or the path itself.

    Args:
        source: A `.keras` or `.tflite` file, a run folder (from `train`), or
            the name of a bundled model.

    Returns:
        The path to read the model from (not checked to exist unless
        `source` is a folder).

    Raises:
        InferenceError: If `source` is a folder but not a training run
            folder, or a run folder in which no epoch finished.
    """
    path = pretrained.resolve(source)
    if not path.is_dir():
        return path
    if not (path / RUN_CONFIG).is_file():
        raise InferenceError(f"{path}: not a training run folder (no {RUN_CONFIG}): give a "
                             ".keras or .tflite file, a run folder or a bundled model's name")
    if not (path / RUN_BEST_MODEL).is_file():
        raise InferenceError(f"{path}: this run folder has no {RUN_BEST_MODEL} (no epoch "
                             "finished)")
    return path / RUN_BEST_MODEL


def load_predictor(
    path: str | os.PathLike,
    num_threads: int | None = None,
    labels: str | os.PathLike | list[str] | None = None,
) -> Predictor:
    """Loads a `.keras` or `.tflite` model for inference.

    The class names come from `labels`, else from the metadata of a
    `.tflite` file, else from the `labels.txt` beside the model (or in the
    run folder above `checkpoints/`). The target comes from the `.tflite`
    metadata or the run's `config.json`; otherwise a model with one output
    more than the label map has classes is an instance model.

    Args:
        path: Model file, training run folder (its best model) or the name
            of a bundled model (`keras_unet.models.pretrained`).
        num_threads: LiteRT threads (`.tflite` only; default: all cores).
        labels: `labels.txt` path or class names (default: found as above).

    Returns:
        A `Predictor`.

    Raises:
        InferenceError: If the file is missing, not a valid model, or its
            output count does not fit the label map.
    """
    path = model_file(path)
    if not path.is_file():
        raise InferenceError(f"{path}: model file not found")
    if path.suffix == ".keras":
        model = load_keras_model(path)
        predictor = keras_predictor(model, str(path))
        outputs, meta = model.output_shape[-1], model_config(path)
    elif path.suffix == ".tflite":
        meta = _tflite_metadata(path)
        multiple = int(meta.get("input", {}).get("size_multiple", 1))
        predictor, outputs = _tflite_predictor(path, num_threads, multiple)
        predictor.run = as_probabilities(predictor.run, meta.get("output", {}).get("kind"))
    else:
        raise InferenceError(f"{path}: expected a .keras or .tflite model")
    names, source = find_labels(path, labels, meta if path.suffix == ".tflite" else None)
    predictor.names = names
    predictor.target = meta.get("target") or target_from_outputs(outputs, names)
    predictor.object_size = meta.get("object_size")
    predictor.flips = trained_flips(meta)
    predictor.ignore_index = meta.get("ignore_index")
    if names is not None:
        expected = output_count(len(names), predictor.target)
        # An export has one channel per class, two for a sigmoid model.
        exported = predictor.target == "semantic" and outputs == len(names)
        if outputs != expected and not exported:
            raise InferenceError(
                f"{path}: the model has {outputs} output channels but {source} lists "
                f"{len(names)} classes ({predictor.target} models of {len(names)} classes have "
                f"{expected}): give the labels file the model was trained with (--labels)"
            )
    return predictor


def keras_predictor(model, path: str = "memory", **fields) -> Predictor:
    """A `Predictor` of a Keras model, traced once per image size.

    Args:
        model: A Keras model (`keras_unet.models.metadata.output_kind` says
            whether its outputs are logits).
        path: What to call it in messages.
        **fields: Further `Predictor` fields (`target`, `names`, ...).

    Returns:
        A `Predictor` returning probabilities.
    """
    import tensorflow as tf

    height, width, channels = model.input_shape[1:]
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    run = as_probabilities(lambda x: np.asarray(call(x)), output_kind(model))
    return Predictor(run, (height, width) if height and width else None, channels,
                     model_multiple(model), path, **fields)


def as_probabilities(
    run: Callable[[np.ndarray], np.ndarray], kind: str | None
) -> Callable[[np.ndarray], np.ndarray]:
    """`run`, returning probabilities where its model returns logits.

    Args:
        run: A model's batch function.
        kind: Its output kind: `"logits"` (softmax over the channels, a
            sigmoid for one channel, as the training losses apply them),
            else `"softmax"`, `"sigmoid"` or `None` (unknown: taken as
            probabilities).

    Returns:
        `run` itself, or `run` followed by the activation.
    """
    if kind != "logits":
        return run

    def probabilities(batch: np.ndarray) -> np.ndarray:
        logits = np.asarray(run(batch), np.float32)
        if logits.shape[-1] == 1:
            return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)  # sigmoid, no overflow
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)

    return probabilities


def output_count(num_classes: int, target: str = "semantic") -> int:
    """Output channels of a model: 1 (sigmoid) for 2 classes, else one per
    class; instance models add the boundary class."""
    if target == "instances":
        return num_classes + 1
    return 1 if num_classes == 2 else num_classes


def target_from_outputs(outputs: int, names: list[str] | None) -> str:
    """`"instances"` for a model with one output more than it has classes
    (the boundary), else `"semantic"`."""
    if names is not None and outputs == len(names) + 1:
        return "instances"
    return "semantic"


def model_config(model_path: str | os.PathLike) -> dict:
    """What a `.keras` file's folder says of it: the run's `config.json` above
    a checkpoint (`run/checkpoints/x.keras`), with the run's
    `object_size.json` as `"object_size"`, or a bundled model's `card.json`
    (both carry its `target`); `{}` when there is neither."""
    model_path = Path(model_path)
    for folder in (model_path.parent, model_path.parent.parent):
        for name in (RUN_CONFIG, "card.json"):
            config = folder / name
            if config.is_file():
                try:
                    found = json.loads(config.read_text(encoding="utf-8"))
                    if (folder / "object_size.json").is_file():
                        found["object_size"] = json.loads(
                            (folder / "object_size.json").read_text(encoding="utf-8"))
                    return found
                except (OSError, ValueError):
                    return {}
    return {}


def _tflite_metadata(path: Path) -> dict:
    try:
        return read_metadata(path) or {}
    except Exception:  # a model without readable metadata still runs
        return {}


def find_labels(
    path: str | os.PathLike, labels=None, meta: dict | None = None
) -> tuple[list[str] | None, str]:
    """The class names of a model file, and where they came from.

    Args:
        path: The model file.
        labels: A `labels.txt` path or class names, if given.
        meta: The `.tflite` metadata, if any.

    Returns:
        `(names, source)`: from `labels`, else the metadata (the
        `labels.txt` beside an export names output categories, which for an
        instance model include the boundary), else the `labels.txt` beside
        the model or in the folder above it; `(None, "")` when none is
        found.

    Raises:
        InferenceError: If a given labels file is missing or invalid.
    """
    path, meta = Path(path), meta or {}
    if labels is not None and not isinstance(labels, (str, os.PathLike)):
        return list(labels), "the given labels"
    if labels is None and meta.get("labels"):
        return list(meta["labels"]), f"the metadata of {path}"
    candidates = [Path(labels)] if labels is not None else [
        path.parent / "labels.txt", path.parent.parent / "labels.txt"]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return read_labels(candidate), str(candidate)
            except LabelMapError as err:
                raise InferenceError(str(err)) from None
    if labels is not None:
        raise InferenceError(f"{labels}: labels file not found")
    return None, ""


def _interpreter(path: Path, num_threads: int):
    """A LiteRT interpreter with its tensors allocated.

    XNNPACK (LiteRT's default CPU delegate) refuses some valid models, e.g.
    int8 ones with quantization scales outside the ranges it supports; they
    then run on LiteRT's built-in kernels instead, with a warning.

    Raises:
        InferenceError: If the file is not a LiteRT model or LiteRT cannot
            run it.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def allocated(**options):
        with native_output_silenced():  # "Created TensorFlow Lite XNNPACK delegate"
            try:
                interpreter = Interpreter(model_path=str(path), num_threads=num_threads,
                                          **options)
            except ValueError as err:
                raise InferenceError(f"{path}: not a LiteRT model ({err})") from None
            interpreter.allocate_tensors()
        return interpreter

    try:
        return allocated()
    except RuntimeError as err:
        log.warning("%s: XNNPACK cannot run this model (%s); using LiteRT's built-in "
                    "kernels, which are slower", path, str(err).strip()[:300])
    try:
        return allocated(
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except RuntimeError as err:
        raise InferenceError(f"{path}: LiteRT cannot run this model ({err})") from None


def _tflite_predictor(
    path: Path, num_threads: int | None, multiple: int
) -> tuple[Predictor, int]:
    """A predictor of a `.tflite` file and its output channel count."""
    interpreter = _interpreter(path, num_threads or os.cpu_count())
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    _, height, width, channels = inp["shape_signature"]
    dynamic = height < 0 or width < 0

    def quantize(x, details):
        scale, zero = details["quantization"]
        if details["dtype"] == np.float32 or scale == 0:
            return x.astype(details["dtype"])
        info = np.iinfo(details["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(details["dtype"])

    def dequantize(y, details):
        scale, zero = details["quantization"]
        if details["dtype"] == np.float32 or scale == 0:
            return y.astype(np.float32)
        return (y.astype(np.float32) - zero) * scale

    def run(batch: np.ndarray) -> np.ndarray:
        results = []
        for image in batch:  # exported with batch size 1, as mobile runtimes want
            if dynamic and tuple(inp["shape"][1:3]) != image.shape[:2]:
                interpreter.resize_tensor_input(inp["index"], [1, *image.shape])
                interpreter.allocate_tensors()
                inp["shape"] = interpreter.get_input_details()[0]["shape"]
            interpreter.set_tensor(inp["index"], quantize(image[None], inp))
            interpreter.invoke()
            results.append(dequantize(interpreter.get_tensor(out["index"]), out)[0])
        return np.stack(results)

    fixed = None if dynamic else (int(height), int(width))
    return Predictor(run, fixed, int(channels), multiple, str(path)), int(out["shape"][-1])


# Tiling defaults: half a tile apart, Gaussian blend weights of sigma =
# tile / 8, at least MIN_BLEND_WEIGHT.
DEFAULT_OVERLAP = 0.5
SIGMA_SCALE = 1 / 8
MIN_BLEND_WEIGHT = 1e-6


def gaussian_weights(height: int, width: int, sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """Blend weights of one tile: a Gaussian centred on it (nnU-Net's choice).

    Args:
        height: Tile height.
        width: Tile width.
        sigma_scale: Sigma as a fraction of the tile size.

    Returns:
        float32 `(height, width)` weights, 1 at the centre, strictly positive.
    """
    axes = []
    for size in (height, width):
        x = np.arange(size, dtype=np.float64) - (size - 1) / 2
        axes.append(np.exp(-(x**2) / (2 * (sigma_scale * size) ** 2)))
    weights = np.outer(*axes)
    return np.maximum(weights / weights.max(), MIN_BLEND_WEIGHT).astype(np.float32)


def tiling_recipe(tile: tuple[int, int], overlap: float = DEFAULT_OVERLAP) -> dict:
    """How `predict_tiled` runs an image of another size, for an app to do the same.

    Args:
        tile: `(height, width)` of a tile (the model's input size).
        overlap: Fraction of a tile shared by neighbours.

    Returns:
        A JSON-ready description: tile size, overlap, the tile start rule,
        the blend weights and the padding.
    """
    return {
        "tile": list(tile),
        "overlap": overlap,
        "starts": ("per axis: if size <= tile, [0]; else step = max(1, int(tile * (1 - "
                   "overlap))), count = ceil((size - tile) / step) + 1, starts = round(i * "
                   "(size - tile) / (count - 1)) for i < count"),
        "blend": {"weights": "gaussian", "sigma": f"{SIGMA_SCALE} * tile size per axis",
                  "centre": "(size - 1) / 2", "normalized_max": 1.0,
                  "min_weight": MIN_BLEND_WEIGHT,
                  "combine": "sum(probabilities * weight) / sum(weight) per pixel"},
        "padding": ("images smaller than a tile are padded at the bottom and right to the "
                    "tile size (reflect, or edge where the image is not larger than the "
                    "padding), then cropped back"),
    }


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles covering `size` pixels, about `overlap` apart.

    Args:
        size: Image size along one axis (>= tile).
        tile: Tile size.
        overlap: Fraction of a tile shared by neighbours (0 <= overlap < 1).

    Returns:
        Evenly spaced offsets from 0 to `size - tile`.
    """
    if size <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    count = int(np.ceil((size - tile) / step)) + 1
    return [int(round(i * (size - tile) / (count - 1))) for i in range(count)]


def pad_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pads an `(H, W, C)` image at the bottom/right to at least `height x width`.

    Reflection where the image is large enough, edge replication otherwise.
    """
    pad_h, pad_w = max(0, height - image.shape[0]), max(0, width - image.shape[1])
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(
        image.shape[:2]) > max(pad_h, pad_w) else "edge")


def trained_flips(meta: dict) -> tuple[str, ...]:
    """The flips a model's training showed it (see `Predictor.flips`).

    Args:
        meta: What the model records (`model_config` of a `.keras` file, the
            metadata of a `.tflite` file): its `test_time_flips`, or its
            training's `augment` settings (a run's config, a bundled model's
            card).

    Returns:
        Names of `FLIP_AXES`; `DEFAULT_FLIPS` when `meta` says nothing.
    """
    if "test_time_flips" in meta:
        return tuple(meta["test_time_flips"])
    augment = meta.get("augment", meta.get("training", {}).get("augment"))
    if not isinstance(augment, dict):
        return DEFAULT_FLIPS
    from keras_unet.data.augment import Augment

    # Only the geometry: settings of another version (or hand-edited ones)
    # must not keep a model from loading.
    geometry = {key: augment[key] for key in ("flip", "vertical_flip", "rotate90")
                if key in augment}
    return Augment(**geometry).test_time_flips


def _predict_batch(predictor: Predictor, batch: np.ndarray, tta: bool) -> np.ndarray:
    """Predicts a batch, averaging over the model's training flips when `tta`."""
    flips = [()] + [FLIP_AXES[name] for name in predictor.flips] if tta else [()]
    total = None
    for axes in flips:
        flipped = np.flip(batch, axes) if axes else batch
        out = predictor(flipped)
        out = np.flip(out, axes) if axes else out
        total = out if total is None else total + out
    return total / len(flips)


MAX_OVERLAP = 0.9


def predict_tiled(
    predictor: Predictor,
    image: np.ndarray,
    tile: tuple[int, int],
    *,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 4,
    tta: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Predicts a large image by overlapping tiles blended with Gaussian weights.

    Args:
        predictor: The model.
        image: float32 `(H, W, C)` in [0, 1].
        tile: `(height, width)` of a tile (the model's input size).
        overlap: Fraction of a tile shared by neighbours, 0 to 0.9.
        batch_size: Tiles predicted (and held) at once.
        tta: Average over the flips the model was trained with too
            (`Predictor.flips`).
        progress: Show a progress bar over the tiles (when there are more
            than a batch of them).

    Returns:
        float32 `(H, W, K)` probabilities.

    Raises:
        InferenceError: If the tile size is not positive or not a multiple
            of the model's size multiple, or the overlap is outside [0, 0.9].
    """
    check_tiling(predictor, tile, overlap)
    height, width = image.shape[:2]
    padded = pad_image(image, *tile)
    tile_h, tile_w = tile
    weights = gaussian_weights(tile_h, tile_w)[..., None]
    boxes = [(y, x) for y in tile_starts(padded.shape[0], tile_h, overlap)
             for x in tile_starts(padded.shape[1], tile_w, overlap)]
    total = weight_sum = None
    bar = tqdm(total=len(boxes), desc="tiles", unit="tile", leave=False,
               disable=None if progress and len(boxes) > batch_size else True)
    for chunk in _chunks(boxes, batch_size):
        batch = np.stack([padded[y:y + tile_h, x:x + tile_w] for y, x in chunk])
        out = _predict_batch(predictor, batch, tta)
        if total is None:
            total = np.zeros((*padded.shape[:2], out.shape[-1]), np.float32)
            weight_sum = np.zeros((*padded.shape[:2], 1), np.float32)
        for (y, x), probs in zip(chunk, out):
            total[y:y + tile_h, x:x + tile_w] += probs * weights
            weight_sum[y:y + tile_h, x:x + tile_w] += weights
        bar.update(len(chunk))
    bar.close()
    return (total / weight_sum)[:height, :width]


def check_tiling(predictor: Predictor, tile: tuple[int, int], overlap: float) -> None:
    """Checks a tile size and overlap for a model.

    Raises:
        InferenceError: Naming the value and what is allowed.
    """
    if not all(isinstance(t, (int, np.integer)) and t > 0 for t in tile):
        raise InferenceError(f"tile size {tile} must be positive integers")
    m = predictor.multiple
    if predictor.input_size is None and any(t % m for t in tile):
        raise InferenceError(f"tile size {tile[0]}x{tile[1]} must be a multiple of {m} for "
                         f"{predictor.path}")
    if not 0.0 <= overlap <= MAX_OVERLAP:
        raise InferenceError(f"tile overlap {overlap} must be in [0, {MAX_OVERLAP}] (a fraction "
                         "of the tile; 0.5 is the usual)")


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def check_object_size(predictor: Predictor, object_size: float | str | None) -> None:
    """Checks that `object_size` (see `predict_image`) can be used with the model.

    Raises:
        InferenceError: If it is given for a model that records no training
            object size.
    """
    if object_size is not None and not predictor.object_size:
        raise InferenceError(f"{predictor.path}: the model records no training object size, "
                             "so --object-size cannot rescale for it")


def predict_image(predictor: Predictor, image: np.ndarray, **options) -> np.ndarray:
    """Predicts one image of any size: `predict_scaled`'s probabilities.

    Args:
        predictor: The model.
        image: float32 `(H, W, C)` in [0, 1].
        **options: `predict_scaled`'s keyword arguments.

    Returns:
        float32 `(H, W, K)` probabilities.

    Raises:
        InferenceError: If `object_size` is given for a model that records
            no training object size.
    """
    return predict_scaled(predictor, image, **options)[0]


def predict_scaled(
    predictor: Predictor,
    image: np.ndarray,
    *,
    tile: tuple[int, int] | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 4,
    tta: bool = False,
    progress: bool = False,
    object_size: float | str | None = None,
) -> tuple[np.ndarray, float]:
    """Predicts one image of any size, and says at what scale.

    A model with a fixed input size (or any model when `tile` is given) runs
    by tiles; a model that takes any size runs on the whole image, padded to
    its size multiple and cropped back. With `object_size`, the image is
    first resized so that its objects have the training size
    (`keras_unet.inference.scale`).

    Args:
        predictor: The model.
        image: float32 `(H, W, C)` in [0, 1].
        tile: Tile size for any-size models (default: whole image).
        overlap: Tile overlap.
        batch_size: Tiles in memory at once.
        tta: Flip test-time augmentation: average over the flips the
            model was trained with (`Predictor.flips`).
        progress: Show a progress bar over the tiles.
        object_size: The image's median object diameter in pixels, or
            `"auto"` to estimate it by a first prediction; `None`: predict
            at the image's own scale.

    Returns:
        `(probabilities, factor)`: float32 `(H, W, K)` probabilities at the
        image's size, and the factor the image was resized by to predict
        it (1.0 without `object_size`; see `Predictor.min_object_size`).

    Raises:
        InferenceError: If `object_size` is given for a model that records
            no training object size.
    """
    if object_size is not None:
        check_object_size(predictor, object_size)
        return predict_at_object_size(
            lambda scaled: predict_image(predictor, scaled, tile=tile, overlap=overlap,
                                         batch_size=batch_size, tta=tta, progress=progress),
            image, predictor.object_size, object_size, predictor.target)
    tile = tile or predictor.input_size
    if tile is not None:
        return predict_tiled(predictor, image, tile, overlap=overlap,
                             batch_size=batch_size, tta=tta, progress=progress), 1.0
    height, width = image.shape[:2]
    m = predictor.multiple
    padded = pad_image(image, -(-height // m) * m, -(-width // m) * m)
    return _predict_batch(predictor, padded[None], tta)[0, :height, :width], 1.0


def list_images(source: str | os.PathLike) -> list[Path]:
    """Image files of a path: one file, a folder (recursively) or a glob.

    Raises:
        InferenceError: If nothing matches.
    """
    import glob

    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        found = sorted(Path(p) for p in glob.glob(str(source), recursive=True)
                       if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        # A folder or a pattern may hold no images; a plain path may not exist.
        pattern = any(char in str(source) for char in "*?[")
        raise InferenceError(f"{source}: " + ("no images found" if path.is_dir() or pattern
                                              else "no such file or folder"))
    return found


@dataclass
class PredictionSummary:
    """What `predict_files` did.

    Attributes:
        written: Images predicted.
        errors: `(file, reason)` of the images that could not be read.
        labelme_written: LabelMe files written.
        labelme_kept: `(file, reason)` of LabelMe files left as they were.
        unsure: `(file, uncertain share)` of the images the model is unsure
            of (`keras_unet.inference.confidence`), most unsure first.
    """

    written: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    labelme_written: int = 0
    labelme_kept: list[tuple[str, str]] = field(default_factory=list)
    unsure: list[tuple[str, float]] = field(default_factory=list)

    def format(self, output_dir) -> str:
        """A few lines for people."""
        lines = [f"{self.written} images predicted, {len(self.errors)} failed -> {output_dir}"]
        if self.unsure:
            shown = ", ".join(f"{Path(path).name} ({share:.0%})"
                              for path, share in self.unsure[:UNSURE_SHOWN])
            more = len(self.unsure) - UNSURE_SHOWN
            lines.append(
                f"the model is unsure of {len(self.unsure)} image(s): more than "
                f"{UNSURE_SHARE:.0%} of what may be objects lies between "
                f"{UNSURE_LOW:.0%} and {UNSURE_HIGH:.0%} foreground probability. They may "
                "be unlike its training images (stain, exposure, magnification); check "
                f"their overlays: {shown}" + (f" and {more} more" if more > 0 else "")
                + " (every image's share: predictions.csv)")
        if self.labelme_written or self.labelme_kept:
            lines.append(f"LabelMe files: {self.labelme_written} written, "
                         f"{len(self.labelme_kept)} left as they were")
            lines += [f"  kept {path}: {reason}" for path, reason in self.labelme_kept]
        return "\n".join(lines)


def predict_files(
    predictor: Predictor,
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    tile: tuple[int, int] | None = None,
    overlap: float = DEFAULT_OVERLAP,
    tta: bool = False,
    probabilities: bool = False,
    min_size: int | None = None,
    labelme=None,
    progress: bool = False,
    object_size: float | str | None = None,
) -> PredictionSummary:
    """Predicts masks for image files and writes them for people and programs.

    Writes `masks/<name>.png` (class ids, palette PNG) and
    `overlays/<name>.png` (the image with coloured outlines and a legend);
    instance models also `instances/<name>.png` (16-bit object ids, 0 =
    background; see `keras_unet.data.instances.label_instances`); with
    `probabilities`, `probabilities/<name>.npy` (float16 `(H, W, K)`); with
    `labelme`, `<name>.json`, a LabelMe file of the prediction (see
    `keras_unet.inference.preannotate`); and, for instance models and
    models with a background class, `predictions.csv`, a line per image:
    the resize factor `object_size` predicted it at (`scale`), its object
    count (instance models) and its `uncertain_share`
    (`keras_unet.inference.confidence`); the images above `UNSURE_SHARE` are
    listed in the summary.

    Args:
        predictor: The model.
        source: Image file, folder or glob.
        output_dir: Output folder.
        tile: Tile size for any-size models (default whole images).
        overlap: Tile overlap.
        tta: Flip test-time augmentation.
        probabilities: Also save the probability maps.
        min_size: Instance models: smallest object kept, in pixels
            (default: `Predictor.min_object_size`, relative to the training
            objects where the model records them).
        labelme: A `keras_unet.inference.preannotate.LabelMeOutput` to write LabelMe
            files too, or `None`.
        progress: Show progress bars (images, and tiles of large images).
        object_size: Rescale each image to the training object size: the
            images' median object diameter in pixels, or `"auto"` (see
            `predict_image`).

    Returns:
        A `PredictionSummary`.

    Raises:
        InferenceError: If `source` holds no images, or LabelMe files are
            asked for a model without class names.
        InferenceError: On a bad tile size or overlap.
    """
    if tile is not None:
        check_tiling(predictor, tile, overlap)
    if labelme is not None and predictor.names is None:
        raise InferenceError(f"{predictor.path}: LabelMe files need the class names: give "
                             "--labels")
    check_object_size(predictor, object_size)
    output_dir = Path(output_dir)
    root = Path(source) if Path(source).is_dir() else None
    paths = _inputs(list_images(source), output_dir, root)
    summary = PredictionSummary()
    paths = _without_clashes(paths, root, summary)
    rows = []
    bar = tqdm(paths, desc="predict", unit="image", disable=None if progress else True)
    for path in bar:
        try:
            image = read_image(path, predictor.channels)
        except ReadError as err:
            summary.errors.append((str(path), str(err).split(": ", 1)[-1]))
            continue
        probs, factor = predict_scaled(predictor, image, tile=tile, overlap=overlap, tta=tta,
                                       progress=progress, object_size=object_size)
        stem = _stem(path, root)
        objects = None
        if predictor.target == "instances":
            objects, object_classes = label_instances(
                probs, "instances",
                min_size=predictor.min_object_size(factor) if min_size is None else min_size)
            mask = object_classes[objects].astype(np.uint8)
            save_instances(output_dir / "instances" / f"{stem}.png", objects)
        else:
            mask = semantic_classes(probs)
        save_mask(output_dir / "masks" / f"{stem}.png", mask)
        row = {"image": str(path)}
        if object_size is not None:
            row["scale"] = round(factor, 3)
        if objects is not None:
            row["objects"] = int(objects.max())
        if _has_background(predictor, probs):
            row["uncertain_share"] = round(uncertain_share(probs), 4)
            if row["uncertain_share"] > UNSURE_SHARE:
                summary.unsure.append((str(path), row["uncertain_share"]))
        rows.append(row)
        picture = np.clip(image * 255, 0, 255).round().astype(np.uint8)
        picture = picture[..., 0] if picture.shape[-1] == 1 else picture
        files.save_image(output_dir / "overlays" / f"{stem}.png",
                         overlay(picture, mask, predictor.names, outline=True, objects=objects))
        if probabilities:
            target = output_dir / "probabilities" / f"{stem}.npy"
            files.write_bytes(target, _npy_bytes(probs.astype(np.float16)))
        if labelme is not None:
            json_path = output_dir / f"{stem}.json"
            kept = labelme.write(
                json_path, path, mask, predictor.names, objects=objects,
                confidence=pixel_confidence(probs, mask, predictor.target),
                model=Path(predictor.path).name)
            if kept:
                summary.labelme_kept.append((str(json_path), kept))
            else:
                summary.labelme_written += 1
        summary.written += 1
    if any(len(row) > 1 for row in rows):  # a street model has nothing to add
        files.write_csv(output_dir / "predictions.csv", rows)
    summary.unsure.sort(key=lambda item: -item[1])
    return summary


def _has_background(predictor: Predictor, probabilities: np.ndarray) -> bool:
    """Whether the model has a foreground probability: a sigmoid model, or
    one whose class 0 is the background."""
    names = predictor.names
    return probabilities.shape[-1] == 1 or bool(names) and names[0] == BACKGROUND_LABEL


# Unsure images named in the summary (all of them are in predictions.csv).
UNSURE_SHOWN = 5

# The folders `predict_files` writes into its output folder.
OUTPUT_FOLDERS = ("masks", "overlays", "instances", "probabilities")


def _inputs(paths: list[Path], output_dir: Path, root: Path | None) -> list[Path]:
    """The images to predict: never what an earlier prediction wrote.

    Raises:
        InferenceError: If every image found is a prediction output.
    """
    written = [(output_dir / name).resolve() for name in OUTPUT_FOLDERS]
    kept = [p for p in paths if not any(p.resolve().is_relative_to(w) for w in written)]
    if not kept:
        raise InferenceError(f"{root or paths[0]}: no images besides keras-unet's own outputs "
                             f"({', '.join(OUTPUT_FOLDERS)}/ of {output_dir})")
    return kept


def _stem(path: Path, root: Path | None) -> str:
    """The name of an image's outputs: its path below the input folder, no suffix."""
    return path.relative_to(root).with_suffix("").as_posix() if root else path.stem


def _without_clashes(paths: list[Path], root: Path | None,
                     summary: PredictionSummary) -> list[Path]:
    """Leaves out images whose outputs would overwrite each other's
    (`a.png` and `a.jpg`), each reported as an error."""
    by_stem = {}
    for path in paths:
        by_stem.setdefault(_stem(path, root), []).append(path)
    for stem, group in by_stem.items():
        if len(group) > 1:
            names = " and ".join(p.name for p in group)
            summary.errors += [(str(p), f"{names} would write the same masks/{stem}.png: "
                                        "rename one") for p in group]
    return [p for p in paths if len(by_stem[_stem(p, root)]) == 1]


def _npy_bytes(array: np.ndarray) -> bytes:
    """`array` in `.npy` format."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
