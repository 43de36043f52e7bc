"""Tests for keras_unet.models.model_metadata: the standard TFLite metadata.

The references are the runtimes apps use: MediaPipe Tasks' ImageSegmenter
and tflite-support (its MetadataDisplayer and the Task Library's
ImageSegmenter), each in its own virtual environment (see `run_oracle`).
They load the exported files unchanged; their category masks are compared
with `keras-unet predict`'s on images at the model's input size.
"""

import json
import logging
import zipfile

import keras
import numpy as np
import PIL.Image
import pytest
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

from keras_unet import build_unet
from keras_unet.export import export_run, export_tflite, image_windows, read_metadata
from keras_unet.inference.predict import load_predictor, predict_files
from keras_unet.models import pretrained
from keras_unet.models.metadata import METADATA_NAME
from keras_unet.models.model_metadata import (
    FILE_IDENTIFIER,
    METADATA_ENTRY,
    ImageSegmenterMetadata,
    metadata_flatbuffer,
)

# Pixels on which a runtime's category mask must equal predict's mask.
MASK_AGREEMENT = {"float32": 0.9999, "float16": 0.9999, "int8": 0.999}


def export(model, held_out, folder, precision="float32", io_type="float32", size=128):
    names, verification, calibration = held_out
    out = folder / f"model_{precision}_{io_type}.tflite"
    export_tflite(model, out, names=names, verification_images=verification[:, :size, :size],
                  precision=precision, input_size=(size, size), io_type=io_type,
                  representative=(x[None, :size, :size] for x in calibration), latency_runs=0)
    return out


def save_pngs(windows, folder):
    """The windows as 8-bit RGB PNGs, the files apps and predict both read."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, window in enumerate(windows):
        path = folder / f"window_{i}.png"
        PIL.Image.fromarray(np.round(window * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def predicted_masks(model_path, images, out):
    """`keras-unet predict`'s class masks of the images, by file."""
    predict_files(load_predictor(model_path), images[0].parent, out)
    return {p: np.asarray(PIL.Image.open(out / "masks" / p.name)) for p in images}


def entries(path):
    model = flatbuffer_utils.read_model(str(path))
    return {m.name.decode(): bytes(model.buffers[m.buffer].data) for m in model.metadata}


def test_the_standard_entry_and_the_label_file_are_embedded(model, held_out, tmp_path):
    names, _, _ = held_out
    out = export(model, held_out, tmp_path)
    found = entries(out)
    # A ModelMetadata flatbuffer: the identifier sits after the root offset.
    assert found[METADATA_ENTRY][4:8] == FILE_IDENTIFIER
    with zipfile.ZipFile(out) as archive:  # the zip appended to the model
        assert archive.namelist() == ["labels.txt"]
        assert archive.read("labels.txt").decode().splitlines() == names
    # The keras-unet entry still reads back, equal to the sidecar.
    assert read_metadata(out) == json.loads(out.with_suffix(".json").read_text())
    assert json.loads(found[METADATA_NAME]) == read_metadata(out)


def test_the_metadata_leaves_the_outputs_bit_identical(model, held_out, tmp_path):
    _, verification, _ = held_out
    out = export(model, held_out, tmp_path, precision="int8")
    bare = flatbuffer_utils.read_model(str(out))
    bare.metadata = [m for m in bare.metadata
                     if m.name.decode() not in (METADATA_ENTRY, METADATA_NAME)]
    flatbuffer_utils.write_model(bare, str(tmp_path / "bare.tflite"))
    results = []
    for path in (out, tmp_path / "bare.tflite"):
        interpreter = Interpreter(str(path))
        interpreter.allocate_tensors()
        (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
        interpreter.set_tensor(inp["index"], verification[:1])
        interpreter.invoke()
        results.append(interpreter.get_tensor(outp["index"]).copy())
    assert np.array_equal(*results)


def test_an_unknown_color_space_is_refused():
    meta = ImageSegmenterMetadata("m", "d", "1", "", "", "CMYK", (0.0,), (255.0,), (0, 1),
                                  ("a",), "o")
    with pytest.raises(ValueError, match="color_space='CMYK'"):
        metadata_flatbuffer(meta)


@pytest.mark.parametrize("precision, io_type", [
    ("float32", "float32"), ("float16", "float32"), ("int8", "float32"), ("int8", "uint8"),
])
def test_mediapipe_loads_every_precision_and_its_mask_is_predicts(
        model, held_out, tmp_path, run_oracle, precision, io_type):
    """A sigmoid nucleus model, exported with one channel per class."""
    names, verification, _ = held_out
    out = export(model, held_out, tmp_path, precision, io_type)
    images = save_pngs(verification, tmp_path / "images")
    result = run_oracle("mediapipe", "mediapipe_segment", out, *images, out=tmp_path / "mp")
    assert result["labels"] == names
    ours = predicted_masks(out, images, tmp_path / "predict")
    theirs = {p: np.load(result["masks"][str(p)]) for p in images}
    agreement = np.mean([ours[p] == theirs[p] for p in images])
    assert agreement >= MASK_AGREEMENT[precision]
    assert 0.02 < np.mean([ours[p] for p in images]) < 0.98  # both classes occur


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_mediapipe_runs_a_percentile_model_as_predict_does(held_out, tmp_path, run_oracle,
                                                           precision):
    """`per_image_percentile` sorts a sample of the image (TOPK_V2) inside the
    model; MediaPipe's runtime must run it and agree with ours."""
    names, verification, calibration = held_out
    keras.utils.set_random_seed(1)
    model = build_unet((None, None, 3), 1, filters=4, depth=2, normalization="batch",
                       input_normalization="per_image_percentile")
    out = tmp_path / f"model_{precision}.tflite"
    export_tflite(model, out, names=names, verification_images=verification,
                  precision=precision, input_size=(128, 128), min_agreement=0.0,
                  representative=(x[None] for x in calibration), latency_runs=0)
    images = save_pngs(verification, tmp_path / "images")
    result = run_oracle("mediapipe", "mediapipe_segment", out, *images, out=tmp_path / "mp")
    ours = predicted_masks(out, images, tmp_path / "predict")
    theirs = {p: np.load(result["masks"][str(p)]) for p in images}
    assert np.mean([ours[p] == theirs[p] for p in images]) >= MASK_AGREEMENT[precision]


@pytest.fixture(scope="module")
def bundled_exports(tiny_nuclei, tmp_path_factory):
    """The bundled instance model (background, nucleus, boundary) at 128x128."""
    out = tmp_path_factory.mktemp("bundled")
    export_run(pretrained.resolve("nuclei_dsb2018"), out, precisions=("float32", "int8"),
               input_size=(128, 128), data=tiny_nuclei, calibration_samples=16,
               verification_samples=4, latency_runs=0)
    images = sorted((tiny_nuclei / "images").glob("*.png"))[:4]
    windows = image_windows([str(p) for p in images], (128, 128), 3, limit=4)
    return out, save_pngs(windows, out / "windows")


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_mediapipe_names_every_channel_of_an_instance_model(
        bundled_exports, tmp_path, run_oracle, precision):
    out, images = bundled_exports
    model_path = out / f"model_{precision}.tflite"
    result = run_oracle("mediapipe", "mediapipe_segment", model_path, *images, out=tmp_path)
    assert result["labels"] == ["_background_", "nucleus", "_boundary_"]
    assert (out / "labels.txt").read_text().splitlines() == result["labels"]
    predictor = load_predictor(model_path)
    for path in images:
        pixels = np.asarray(PIL.Image.open(path), np.float32) / 255
        channels = predictor(pixels[None])[0].argmax(-1)
        agreement = np.mean(np.load(result["masks"][str(path)]) == channels)
        assert agreement >= MASK_AGREEMENT[precision]


@pytest.mark.parametrize("io_type", ["float32", "uint8"])
def test_tflite_support_reads_the_metadata_and_its_segmenter_agrees(
        model, held_out, tmp_path, run_oracle, io_type):
    names, verification, _ = held_out
    precision = "float32" if io_type == "float32" else "int8"
    out = export(model, held_out, tmp_path, precision, io_type)
    images = save_pngs(verification[:4], tmp_path / "images")
    result = run_oracle("tflite_support", "tflite_support_metadata", out, *images,
                        out=tmp_path / "tfls")
    (subgraph,) = result["metadata"]["subgraph_metadata"]
    (image,), (masks,) = subgraph["input_tensor_metadata"], subgraph["output_tensor_metadata"]
    assert image["content"]["content_properties"]["color_space"] == "RGB"
    (unit,) = image["process_units"]
    assert unit["options_type"] == "NormalizationOptions"
    assert unit["options"] == {"mean": [0.0], "std": [255.0]}
    low, high = (0, 255) if io_type == "uint8" else (0.0, 1.0)
    assert image["stats"] == {"max": [high], "min": [low]}
    (labels,) = masks["associated_files"]
    assert labels["type"] == "TENSOR_AXIS_LABELS" and labels["name"] == "labels.txt"
    assert result["files"] == ["labels.txt"] and result["labels"].splitlines() == names
    assert result["category_names"] == names
    ours = predicted_masks(out, images, tmp_path / "predict")
    agreement = np.mean([ours[p] == np.load(result["masks"][str(p)]) for p in images])
    assert agreement >= MASK_AGREEMENT[precision]


def test_mediapipe_refuses_a_greyscale_model_and_the_export_says_so(
        nuclei_dataset, tmp_path, run_oracle, caplog):
    grey = keras.Sequential([keras.Input((None, None, 1)),
                             keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
    windows = np.random.default_rng(0).random((2, 64, 64, 1)).astype("float32")
    with caplog.at_level(logging.WARNING, logger="keras_unet.export.tflite"):
        export_tflite(grey, tmp_path / "grey.tflite", names=["_background_", "x"],
                      verification_images=windows, input_size=(64, 64), latency_runs=0)
    assert "MediaPipe Tasks and the TFLite Task Library take 3-channel" in caplog.text
    with pytest.raises(AssertionError, match="channels = 3 or 4"):
        run_oracle("mediapipe", "mediapipe_segment", tmp_path / "grey.tflite", out=tmp_path)
