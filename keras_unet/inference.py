"""Running trained models on images: `.keras` or `.tflite`, whole or by tiles.

Models take float32 images in [0, 1] (pixel / 255 for 8-bit images, / 65535
for 16-bit), NHWC, and return per-class probabilities (or logits for models
built with `output_activation=None`).

Large images are cut into overlapping tiles (half a tile apart by default)
and stitched with Gaussian weights (sigma = 1/8 of the tile, as nnU-Net
does), so tile borders, where a convolutional network sees less context,
count little. At most `batch_size` tiles are in memory at once.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

log = logging.getLogger(__name__)


class InferenceError(ValueError):
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
    """

    run: Callable[[np.ndarray], np.ndarray]
    input_size: tuple[int, int] | None
    channels: int
    multiple: int
    path: str

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(np.asarray(batch, np.float32))


def model_multiple(model) -> int:
    """Input sizes a keras-unet model takes are multiples of this.

    Every decoder level doubles the resolution once (`dec<level>_up`), so
    the multiple is 2 to the number of decoder levels (`2**depth`, or 32
    with a backbone); 1 for other models.
    """
    ups = [layer for layer in model.layers if layer.name.startswith("dec")
           and layer.name.endswith("_up")]
    return 2 ** len(ups)


def load_predictor(path: str | os.PathLike, num_threads: int | None = None) -> Predictor:
    """Loads a `.keras` or `.tflite` model for inference.

    Args:
        path: Model file.
        num_threads: LiteRT threads (`.tflite` only; default: all cores).

    Returns:
        A `Predictor`.

    Raises:
        InferenceError: If the file is missing or not a known model type.
    """
    path = Path(path)
    if not path.is_file():
        raise InferenceError(f"{path}: model file not found")
    if path.suffix == ".keras":
        import keras
        import tensorflow as tf

        model = keras.models.load_model(path, compile=False)
        height, width, channels = model.input_shape[1:]
        fixed = (height, width) if height and width else None
        run = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        return Predictor(lambda x: np.asarray(run(x)), fixed, channels,
                         model_multiple(model), str(path))
    if path.suffix == ".tflite":
        return _tflite_predictor(path, num_threads)
    raise InferenceError(f"{path}: expected a .keras or .tflite model")


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
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=num_threads, **options)
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


def _tflite_predictor(path: Path, num_threads: int | None) -> Predictor:
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
    return Predictor(run, fixed, int(channels), 1, str(path))


def read_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """Reads an image as float32 `(H, W, channels)` in [0, 1], EXIF-upright.

    Args:
        path: Image file.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        The image array.

    Raises:
        InferenceError: If the file cannot be decoded.
    """
    try:
        with PIL.Image.open(path) as image:
            image = PIL.ImageOps.exif_transpose(image)
            if image.mode.startswith("I;16") or image.mode == "I":
                array = np.asarray(image, np.float32) / 65535.0
                array = array[..., None] if array.ndim == 2 else array
                return np.repeat(array, channels, -1) if channels == 3 else array
            array = np.asarray(image.convert("L" if channels == 1 else "RGB"), np.float32)
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise InferenceError(f"{path}: unreadable image ({err})") from None
    array = array / 255.0
    return array[..., None] if channels == 1 else array


def gaussian_weights(height: int, width: int, sigma_scale: float = 1 / 8) -> np.ndarray:
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
    return np.maximum(weights / weights.max(), 1e-6).astype(np.float32)


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


def _flips(tta: bool) -> list[tuple[int, ...]]:
    return [(), (1,), (2,), (1, 2)] if tta else [()]


def _predict_batch(predictor: Predictor, batch: np.ndarray, tta: bool) -> np.ndarray:
    """Predicts a batch, averaging over flips when `tta`."""
    total = None
    for axes in _flips(tta):
        flipped = np.flip(batch, axes) if axes else batch
        out = predictor(flipped)
        out = np.flip(out, axes) if axes else out
        total = out if total is None else total + out
    return total / len(_flips(tta))


def predict_tiled(
    predictor: Predictor,
    image: np.ndarray,
    tile: tuple[int, int],
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    tta: bool = False,
) -> np.ndarray:
    """Predicts a large image by overlapping tiles blended with Gaussian weights.

    Args:
        predictor: The model.
        image: float32 `(H, W, C)` in [0, 1].
        tile: `(height, width)` of a tile (the model's input size).
        overlap: Fraction of a tile shared by neighbours.
        batch_size: Tiles predicted (and held) at once.
        tta: Average over horizontal/vertical flips too.

    Returns:
        float32 `(H, W, K)` probabilities.
    """
    height, width = image.shape[:2]
    padded = pad_image(image, *tile)
    tile_h, tile_w = tile
    weights = gaussian_weights(tile_h, tile_w)[..., None]
    boxes = [(y, x) for y in tile_starts(padded.shape[0], tile_h, overlap)
             for x in tile_starts(padded.shape[1], tile_w, overlap)]
    total = weight_sum = None
    for chunk in _chunks(boxes, batch_size):
        batch = np.stack([padded[y:y + tile_h, x:x + tile_w] for y, x in chunk])
        out = _predict_batch(predictor, batch, tta)
        if total is None:
            total = np.zeros((*padded.shape[:2], out.shape[-1]), np.float32)
            weight_sum = np.zeros((*padded.shape[:2], 1), np.float32)
        for (y, x), probs in zip(chunk, out):
            total[y:y + tile_h, x:x + tile_w] += probs * weights
            weight_sum[y:y + tile_h, x:x + tile_w] += weights
    return (total / weight_sum)[:height, :width]


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_image(
    predictor: Predictor,
    image: np.ndarray,
    *,
    tile: tuple[int, int] | None = None,
    overlap: float = 0.5,
    batch_size: int = 4,
    tta: bool = False,
) -> np.ndarray:
    """Predicts one image of any size.

    A model with a fixed input size (or any model when `tile` is given) runs
    by tiles; a model that takes any size runs on the whole image, padded to
    its size multiple and cropped back.

    Args:
        predictor: The model.
        image: float32 `(H, W, C)` in [0, 1].
        tile: Tile size for any-size models (default: whole image).
        overlap: Tile overlap.
        batch_size: Tiles in memory at once.
        tta: Flip test-time augmentation.

    Returns:
        float32 `(H, W, K)` probabilities.
    """
    tile = tile or predictor.input_size
    if tile is not None:
        return predict_tiled(predictor, image, tile, overlap=overlap,
                             batch_size=batch_size, tta=tta)
    height, width = image.shape[:2]
    m = predictor.multiple
    padded = pad_image(image, -(-height // m) * m, -(-width // m) * m)
    return _predict_batch(predictor, padded[None], tta)[0, :height, :width]


def list_images(source: str | os.PathLike) -> list[Path]:
    """Image files of a path: one file, a folder (recursively) or a glob.

    Raises:
        InferenceError: If nothing matches.
    """
    import glob

    from keras_unet.dataset import IMAGE_SUFFIXES

    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        found = sorted(Path(p) for p in glob.glob(str(source), recursive=True)
                       if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InferenceError(f"{source}: no images found")
    return found


def predict_files(
    predictor: Predictor,
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    names: list[str] | None = None,
    tile: tuple[int, int] | None = None,
    overlap: float = 0.5,
    tta: bool = False,
    probabilities: bool = False,
    progress: bool = False,
) -> tuple[int, list[tuple[str, str]]]:
    """Predicts masks for image files and writes them for people and programs.

    Writes `masks/<name>.png` (class ids, palette PNG), `overlays/<name>.png`
    (image, coloured mask and legend) and, with `probabilities`,
    `probabilities/<name>.npy` (float16 `(H, W, K)`).

    Args:
        predictor: The model.
        source: Image file, folder or glob.
        output_dir: Output folder.
        names: Class names for the legends.
        tile: Tile size for any-size models (default whole images).
        overlap: Tile overlap.
        tta: Flip test-time augmentation.
        probabilities: Also save the probability maps.
        progress: Show a progress bar.

    Returns:
        `(written, errors)`: number of images done and `(file, reason)` of
        the images that failed.

    Raises:
        InferenceError: If `source` holds no images.
    """
    from tqdm.auto import tqdm

    from keras_unet import files
    from keras_unet.evaluate import predicted_classes
    from keras_unet.visualize import overlay

    output_dir = Path(output_dir)
    paths = list_images(source)
    root = Path(source) if Path(source).is_dir() else None
    written, errors = 0, []
    for path in tqdm(paths, desc="predict", unit="image", disable=not progress):
        try:
            image = read_image(path, predictor.channels)
        except InferenceError as err:
            errors.append((str(path), str(err).split(": ", 1)[-1]))
            continue
        probs = predict_image(predictor, image, tile=tile, overlap=overlap, tta=tta)
        mask = predicted_classes(probs)
        stem = path.relative_to(root).with_suffix("").as_posix() if root else path.stem
        files.save_mask(output_dir / "masks" / f"{stem}.png", mask)
        picture = np.clip(image * 255, 0, 255).round().astype(np.uint8)
        files.save_image(output_dir / "overlays" / f"{stem}.png", overlay(picture, mask, names))
        if probabilities:
            target = output_dir / "probabilities" / f"{stem}.npy"
            files.write_bytes(target, _npy_bytes(probs.astype(np.float16)))
        written += 1
    return written, errors


def _npy_bytes(array: np.ndarray) -> bytes:
    """`array` in `.npy` format."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
