"""Tests for keras_unet.export: TFLite at every precision vs the Keras model.

The model is trained in the test on real nuclei (a few dozen steps), because
agreement on an untrained model or on noise proves little.
"""

import json
import shutil

import keras
import numpy as np
import PIL.Image
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_unet.data.instances import SEED_THRESHOLD, min_object_size, semantic_classes
from keras_unet.export import (
    DEFAULT_AGREEMENT,
    ExportError,
    ExportVerificationError,
    export_other,
    export_run,
    export_tflite,
    tflite,
)
from keras_unet.inference.preannotate import LabelMeOutput, is_prediction
from keras_unet.inference.predict import load_predictor
from keras_unet.training.train import TrainConfig, train


@pytest.mark.parametrize("precision, io_type", [
    ("float32", "float32"), ("float16", "float32"), ("dynamic_int8", "float32"),
    ("int8", "float32"), ("int8", "uint8"),
])
def test_every_precision_runs_in_litert_and_agrees_with_keras(
    model, held_out, tmp_path, precision, io_type
):
    names, verification, calibration = held_out
    out = tmp_path / f"m_{precision}.tflite"
    report = export_tflite(model, out, names=names, verification_images=verification,
                           precision=precision, input_size=(128, 128), io_type=io_type,
                           representative=(x[None] for x in calibration), latency_runs=2)
    assert report.agreement.mask_agreement >= DEFAULT_AGREEMENT[precision]
    # Independent re-check: run the file ourselves in LiteRT and compare masks.
    predictor = load_predictor(out)
    keras_masks = np.asarray(model.predict(verification, verbose=0))[..., 0] > 0.5
    tflite_masks = predictor(verification).argmax(-1) == 1  # channels (1 - p, p)
    assert (keras_masks == tflite_masks).mean() >= DEFAULT_AGREEMENT[precision]
    assert not [op for op in report.ops if op.startswith("CUSTOM")]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_model_exports_and_predicts_in_float32(model, held_out, tmp_path,
                                                                  policy):
    """The GPU default (float16) and the bfloat16 CPU one: the converter
    cannot translate a mixed model's casts, so export and inference rebuild
    it in float32, with the trained weights."""
    from keras_unet import build_unet

    names, verification, _ = held_out
    keras.mixed_precision.set_global_policy(policy)
    try:
        mixed = build_unet((None, None, 3), 1, filters=8, depth=3, normalization="batch")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(model.get_weights())
    mixed.save(tmp_path / "mixed.keras")
    report = export_tflite(mixed, tmp_path / "m.tflite", names=names,
                           verification_images=verification, input_size=(128, 128),
                           latency_runs=0)
    assert report.agreement.mask_agreement >= DEFAULT_AGREEMENT["float32"]
    onnx = export_other(mixed, tmp_path / "m.onnx", "onnx", verification_images=verification,
                        input_size=(128, 128), names=names)
    assert onnx.agreement.mask_agreement >= DEFAULT_AGREEMENT["float32"]
    expected = np.asarray(model.predict(verification, verbose=0))[..., 0] > 0.5
    for path in (tmp_path / "m.tflite", tmp_path / "mixed.keras"):
        predictor = load_predictor(path, labels=names)
        probabilities = predictor(verification)
        masks = probabilities.argmax(-1) == 1 if probabilities.shape[-1] == 2 else (
            probabilities[..., 0] > 0.5)
        assert (masks == expected).mean() >= 0.999, path.name


def test_a_logits_model_predicts_and_exports_probabilities(model, held_out, tmp_path):
    """A model built with `output_activation=None`, with the trained sigmoid
    model's weights: its raw outputs are the logits of that model, so
    `predict` and every export must return the sigmoid model's
    probabilities, the export as `(1 - p, p)`."""
    from keras_unet import build_unet

    names, verification, _ = held_out
    logits = build_unet((None, None, 3), 1, filters=8, depth=3, normalization="batch",
                        output_activation=None)
    logits.set_weights(model.get_weights())
    logits.save(tmp_path / "logits.keras")
    expected = np.asarray(model.predict(verification, verbose=0))
    raw = np.asarray(logits.predict(verification, verbose=0))
    assert raw.min() < 0 or raw.max() > 1  # logits, not probabilities
    predicted = load_predictor(tmp_path / "logits.keras", labels=names)(verification)
    np.testing.assert_allclose(predicted, expected, atol=1e-5)

    report = export_tflite(logits, tmp_path / "m.tflite", names=names,
                           verification_images=verification, input_size=(128, 128),
                           latency_runs=0)
    assert report.agreement.mask_agreement >= DEFAULT_AGREEMENT["float32"]
    assert json.loads((tmp_path / "m.json").read_text())["output"]["kind"] == "softmax"
    exported = load_predictor(tmp_path / "m.tflite")(verification)
    np.testing.assert_allclose(exported, np.concatenate([1 - expected, expected], -1),
                               atol=1e-4)


def test_the_output_kind_of_a_model_not_built_by_build_unet():
    from keras_unet.models.metadata import output_kind

    inputs = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    softmax_conv = keras.layers.Conv2D(3, 1, activation="softmax")(features)
    softmax_layer = keras.layers.Softmax()(keras.layers.Conv2D(3, 1)(features))
    assert output_kind(keras.Model(inputs, softmax_conv)) == "softmax"
    assert output_kind(keras.Model(inputs, softmax_layer)) == "softmax"
    assert output_kind(keras.Model(inputs, keras.layers.Conv2D(3, 1)(features))) == "logits"
    assert output_kind(keras.Sequential([keras.Input((8, 8, 3)),
                                         keras.layers.Conv2D(1, 1, activation="sigmoid")])
                       ) == "sigmoid"


@pytest.mark.parametrize("io_type, zero_point", [("uint8", 0), ("int8", -128)])
def test_an_integer_input_takes_the_8_bit_pixels_as_they_are(
        model, held_out, tmp_path, io_type, zero_point):
    """MediaPipe and Edge TPU feed uint8 pixels unscaled: the input step is 1/255."""
    names, verification, calibration = held_out
    out = tmp_path / "m.tflite"
    export_tflite(model, out, names=names, verification_images=verification, precision="int8",
                  input_size=(128, 128), io_type=io_type, latency_runs=0,
                  representative=(x[None] for x in calibration))
    interpreter = Interpreter(str(out))
    interpreter.allocate_tensors()
    (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
    scale, zero = inp["quantization"]
    assert scale == pytest.approx(1 / 255, rel=1e-5) and zero == zero_point
    pixels = np.round(verification * 255).astype(np.int16)
    keras_masks = np.asarray(model.predict(pixels / 255.0, verbose=0))[..., 0] > 0.5
    agree = []
    for image, expected in zip(pixels, keras_masks):
        interpreter.set_tensor(inp["index"], (image[None] + zero_point).astype(inp["dtype"]))
        interpreter.invoke()
        out_scale, out_zero = outp["quantization"]
        probs = (interpreter.get_tensor(outp["index"]).astype(np.float32) - out_zero) * out_scale
        agree.append((probs[0].argmax(-1) == 1) == expected)
    assert np.mean(agree) >= DEFAULT_AGREEMENT["int8"]


def test_int8_file_is_about_a_quarter_of_float32(model, held_out, tmp_path):
    names, verification, calibration = held_out
    sizes = {}
    for precision in ("float32", "int8"):
        sizes[precision] = export_tflite(
            model, tmp_path / f"{precision}.tflite", names=names,
            verification_images=verification, precision=precision, input_size=(128, 128),
            representative=(x[None] for x in calibration), latency_runs=0).size_bytes
    assert sizes["int8"] <= 0.35 * sizes["float32"]


def test_mismatched_preprocessing_is_caught_by_the_verification(model, held_out, tmp_path):
    """Verification images scaled 0..255 (the classic mistake) must fail int8."""
    names, verification, calibration = held_out
    out = tmp_path / "broken.tflite"
    with pytest.raises(ExportVerificationError, match="agrees with Keras on only"):
        export_tflite(model, out, names=names, verification_images=verification * 255,
                      precision="int8", input_size=(128, 128),
                      representative=(x[None] for x in calibration), latency_runs=0)
    assert not out.exists() and not list(tmp_path.glob(".*unverified*"))


def test_sidecar_and_labels_match_the_model(model, held_out, tmp_path):
    names, verification, calibration = held_out
    out = tmp_path / "m.tflite"
    export_tflite(model, out, names=names, verification_images=verification, precision="int8",
                  input_size=(128, 128), io_type="int8",
                  representative=(x[None] for x in calibration), latency_runs=0)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["input"]["shape"] == [1, 128, 128, 3]
    assert meta["output"]["shape"] == [1, 128, 128, 2]
    assert meta["output"]["kind"] == "softmax" and meta["labels"] == names
    assert meta["input"]["dtype"] == "int8" and meta["input"]["quantization"]["scale"] > 0
    # One label per output channel, line i = channel i, as apps read it:
    # the sigmoid model is exported with two channels, (1 - p, p).
    assert (tmp_path / "labels.txt").read_text().splitlines() == names
    assert meta["output"]["labels"] == names
    assert meta["input"]["normalization"]["mean"] == [0.0]
    assert meta["input"]["normalization"]["std"] == [255.0]
    assert meta["tiling"]["tile"] == [128, 128] and meta["tiling"]["overlap"] == 0.5
    # The same content travels inside the .tflite file.
    from keras_unet.export import read_metadata

    assert read_metadata(out) == meta


def test_none_sized_model_exports_with_a_chosen_fixed_size(model, held_out, tmp_path):
    names, verification, _ = held_out
    assert model.input_shape[1:3] == (None, None)
    export_tflite(model, tmp_path / "m.tflite", names=names,
                  verification_images=verification[:, :96, :96], precision="float32",
                  input_size=(96, 96), latency_runs=0)
    predictor = load_predictor(tmp_path / "m.tflite")
    assert predictor.input_size == (96, 96)


def test_dynamic_export_runs_at_two_sizes(model, held_out, tmp_path):
    names, verification, _ = held_out
    export_tflite(model, tmp_path / "d.tflite", names=names, verification_images=verification,
                  precision="float32", input_size=None, latency_runs=0)
    predictor = load_predictor(tmp_path / "d.tflite")
    assert predictor.input_size is None
    for size in (64, 96):
        window = verification[:1, :size, :size]
        expected = model.predict(window, verbose=0)  # p; the export gives (1 - p, p)
        np.testing.assert_allclose(predictor(window), np.concatenate([1 - expected, expected], -1),
                                   atol=1e-4)


def test_sizes_the_model_cannot_take_are_rejected(model, held_out, tmp_path):
    names, verification, _ = held_out
    with pytest.raises(ExportError, match="multiple of 8"):
        export_tflite(model, tmp_path / "m.tflite", names=names,
                      verification_images=verification, input_size=(100, 100))


def test_export_run_writes_every_precision_and_a_report(trained_run, tmp_path):
    run, _ = trained_run
    reports = export_run(run, tmp_path, precisions=("float32", "float16"), input_size=(64, 64),
                         verification_samples=4, latency_runs=1)
    assert [r.precision for r in reports] == ["float32", "float16"]
    saved = json.loads((tmp_path / "export_report.json").read_text())
    assert saved["written"][0]["agreement"]["mask_agreement"] >= 0.999
    assert saved["refused"] == []


def test_a_runs_checkpoint_exports_with_the_runs_data_and_split(trained_run, tmp_path):
    run, _ = trained_run
    last = keras.models.load_model(run / "checkpoints/last.keras", compile=False)
    report, = export_run(run / "checkpoints/last.keras", tmp_path, precisions=("float32",),
                         input_size=(64, 64), verification_samples=4, latency_runs=0)
    windows = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    exported = load_predictor(report.path)(windows)
    np.testing.assert_allclose(exported[..., 1:], last.predict(windows, verbose=0), atol=1e-4)
    with pytest.raises(ExportError, match="outside a run folder .a bundled one too. needs --data"):
        shutil.copy(run / "checkpoints/last.keras", tmp_path / "loose.keras")
        export_run(tmp_path / "loose.keras", tmp_path / "out", precisions=("float32",))


def test_a_refused_precision_leaves_the_others_written_and_reported(trained_run, tmp_path):
    """float32 reproduces Keras on every pixel; int8 cannot, so 100 % refuses it."""
    run, _ = trained_run
    with pytest.raises(ExportVerificationError, match=r"int8.*\(written: float32; see"):
        export_run(run, tmp_path, precisions=("float32", "int8"), input_size=(64, 64),
                   verification_samples=4, calibration_samples=4, latency_runs=1,
                   min_agreement=1.0)
    saved = json.loads((tmp_path / "export_report.json").read_text())
    assert [r["precision"] for r in saved["written"]] == ["float32"]
    assert [r["precision"] for r in saved["refused"]] == ["int8"]
    assert "agrees with Keras on only" in saved["refused"][0]["reason"]
    assert (tmp_path / "model_float32.tflite").is_file()
    assert not (tmp_path / "model_int8.tflite").exists()


@pytest.mark.parametrize("options, message", [
    (dict(verification_samples=0), "--verification-samples 0: must be at least 1"),
    (dict(calibration_samples=0), "--calibration-samples 0: must be at least 1"),
    (dict(min_agreement=float("nan")), r"must be a fraction in \[0, 1\], got nan"),
    (dict(min_agreement=1.5), r"must be a fraction in \[0, 1\], got 1.5"),
])
def test_bad_export_options_are_refused_before_anything_is_written(
        trained_run, tmp_path, options, message):
    run, _ = trained_run
    with pytest.raises(ExportError, match=message):
        export_run(run, tmp_path / "out", precisions=("float32",), **options)
    assert not (tmp_path / "out").exists()


def test_saved_model_export_is_verified(model, held_out, tmp_path):
    from keras_unet.export import export_other

    _, verification, _ = held_out
    report = export_other(model, tmp_path / "saved", "saved_model",
                          verification_images=verification, input_size=(128, 128))
    assert report.agreement.mask_agreement >= 0.999
    assert (tmp_path / "saved" / "saved_model.pb").is_file()


def test_onnx_export_runs_in_onnxruntime(model, held_out, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    import onnx

    from keras_unet.export import export_other

    names, verification, _ = held_out
    report = export_other(model, tmp_path / "m.onnx", "onnx", names=names,
                          verification_images=verification, input_size=(128, 128))
    assert report.agreement.mask_agreement >= 0.999 and report.agreement.max_abs_diff < 1e-3
    # The same contract as a .tflite file: sidecar, labels, embedded metadata.
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == "onnx" and meta["output"]["labels"] == names
    assert meta["input"]["normalization"]["std"] == [255.0]
    assert (tmp_path / "labels.txt").read_text().splitlines() == names
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["keras_unet"]) == meta and props["labels"].splitlines() == names


def test_an_instance_model_carries_its_target_to_tflite_and_predicts_objects(
        nuclei_dataset, tmp_path):
    """The sidecar says `instances`, so predict runs the same post-processing
    after the .tflite model as after the Keras one, pre-annotation included."""
    from keras_unet.inference.predict import predict_files

    config = TrainConfig(
        data=str(nuclei_dataset), work_dir=str(tmp_path / "run"), target="instances",
        crop_size=64, batch_size=4, epochs=1, steps_per_epoch=4, lr=5e-3,
        model={"filters": 4, "depth": 2}, tensorboard=False, verbose=0, val_fraction=0.1)
    train(config)
    export_run(tmp_path / "run", tmp_path / "export", precisions=("float32",),
               input_size=(64, 64), verification_samples=2, latency_runs=0)
    meta = json.loads((tmp_path / "export" / "model_float32.json").read_text())
    assert meta["target"] == "instances" and meta["output"]["boundary_channel"] == 2
    assert meta["output"]["labels"] == ["_background_", "nucleus", "_boundary_"]
    labels = (tmp_path / "export" / "labels.txt").read_text().splitlines()
    assert labels == meta["output"]["labels"]
    assert meta["input"]["size_multiple"] == 4
    assert meta["postprocessing"]["seed_threshold"] == SEED_THRESHOLD  # what predict uses
    keras_model = load_predictor(tmp_path / "run" / "checkpoints" / "best.keras")
    tflite_model = load_predictor(tmp_path / "export" / "model_float32.tflite")
    assert keras_model.target == tflite_model.target == "instances"
    # The smallest object follows the training objects, the same in both.
    assert meta["postprocessing"]["min_size"] == min_object_size(meta["object_size"])
    assert "object_size.range[0]" in meta["postprocessing"]["min_size_rule"]
    for factor in (1.0, 2.0):
        assert (keras_model.min_object_size(factor) == tflite_model.min_object_size(factor)
                == min_object_size(meta["object_size"], factor))
    image = sorted((nuclei_dataset / "images").glob("*.png"))[0]
    for name, predictor in (("keras", keras_model), ("tflite", tflite_model)):
        summary = predict_files(predictor, image, tmp_path / name, tile=(64, 64), min_size=1,
                                labelme=LabelMeOutput())
        assert summary.written == 1 and summary.labelme_written == 1
    keras_ids = np.asarray(PIL.Image.open(tmp_path / "keras" / "instances" / image.name))
    tflite_ids = np.asarray(PIL.Image.open(tmp_path / "tflite" / "instances" / image.name))
    assert keras_ids.dtype == np.uint16 or keras_ids.max() < 65536
    assert (keras_ids > 0).mean() == pytest.approx((tflite_ids > 0).mean(), abs=0.01)
    documents = {name: json.loads((tmp_path / name / f"{image.stem}.json").read_text())
                 for name in ("keras", "tflite")}
    assert all(is_prediction(d) for d in documents.values())
    assert documents["tflite"]["keras_unet"]["model"].endswith("model_float32.tflite")
    # one polygon per object (holes aside), each with its object's group_id
    objects = {s["group_id"] for s in documents["tflite"]["shapes"] if s["label"] == "nucleus"}
    assert len(objects) == len(np.unique(tflite_ids)) - 1


@pytest.fixture(scope="module")
def standardizing_model(nuclei_dataset, tmp_path_factory):
    """A small U-Net with per-image standardization, trained for 120 steps."""
    config = TrainConfig(
        data=str(nuclei_dataset), work_dir=str(tmp_path_factory.mktemp("run")), crop_size=64,
        batch_size=8, epochs=3, steps_per_epoch=40, lr=5e-3,
        model={"filters": 8, "depth": 3, "normalization": "batch",
               "input_normalization": "per_image"},
        tensorboard=False, verbose=0, val_fraction=0.2, early_stopping=0, deterministic=True,
        mixed_precision="off",  # the same model on CPUs with and without bfloat16
    )
    result = train(config)
    return keras.models.load_model(result.run_dir / "checkpoints/best.keras", compile=False)


def int8_agreement(model, held_out, tmp_path, float_layers, monkeypatch):
    """Mask agreement of an int8 export with Keras on the held-out windows and
    dimmed copies, over the pixels the Keras model decides (p not within 0.1
    of 0.5).

    This small model is unsure of some brightfield windows (there most pixels
    are within 0.1 of 0.5, and any rounding flips them: overall agreement goes
    from 0.988 to 0.998 between CPUs that train it differently), so the
    undecided pixels measure the model, not the export.
    """
    monkeypatch.setattr(tflite, "FLOAT_LAYERS", float_layers)
    names, verification, calibration = held_out
    images = np.concatenate([verification, verification * 0.15])  # a dim exposure too
    path = tmp_path / "m.tflite"
    export_tflite(model, path, names=names, verification_images=images, precision="int8",
                  input_size=(128, 128), min_agreement=0.0,
                  representative=(x[None] for x in calibration), latency_runs=0)
    keras_out = np.concatenate([np.asarray(model(x[None], training=False)) for x in images])
    tflite_out = load_predictor(path, labels=names)(images)
    decided = np.abs(keras_out[..., -1] - 0.5) > 0.1
    same = semantic_classes(keras_out) == semantic_classes(tflite_out)
    tensors = Interpreter(str(path)).get_tensor_details()
    return float(same[decided].mean()), {t["name"]: t["dtype"] for t in tensors}


def test_int8_keeps_the_per_image_standardization_in_float(
        standardizing_model, held_out, tmp_path, monkeypatch):
    agreement, dtypes = int8_agreement(standardizing_model, held_out, tmp_path,
                                       tflite.FLOAT_LAYERS, monkeypatch)
    norm = {n: d for n, d in dtypes.items() if "input_norm" in n}
    assert norm and all(d == np.float32 for d in norm.values())
    assert sum(d == np.int8 for d in dtypes.values()) > 20  # the convolutions stay int8
    assert agreement >= DEFAULT_AGREEMENT["int8"]
    # Quantizing the standardization too is what it replaces: clearly worse
    # (on an AVX2 CPU 92.0 % of the decided pixels against 99.995 %).
    fully_quantized, _ = int8_agreement(standardizing_model, held_out, tmp_path / "all",
                                        (), monkeypatch)
    assert fully_quantized < agreement - 0.02


def test_a_percentile_model_exports_its_normalization_in_float(held_out, tmp_path):
    """`per_image_percentile` (a sort of a sample inside the model): float32
    computes what Keras does, on dim copies too; int8 keeps the layer float."""
    from keras_unet import build_unet

    names, verification, calibration = held_out
    keras.utils.set_random_seed(0)
    model = build_unet((None, None, 3), 1, filters=4, depth=2, normalization="batch",
                       input_normalization="per_image_percentile")
    images = np.concatenate([verification, verification * 0.15])
    path = tmp_path / "m_float32.tflite"
    report = export_tflite(model, path, names=names, verification_images=images,
                          precision="float32", input_size=(128, 128), latency_runs=0)
    assert "TOPK_V2" in report.ops and not [op for op in report.ops if op.startswith("CUSTOM")]
    probabilities = load_predictor(path, labels=names)(images)[..., 1]
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0)[..., 0],
                               atol=1e-4)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert "percentile" in meta["input"]["normalization"]["in_graph"]
    export_tflite(model, tmp_path / "m_int8.tflite", names=names, verification_images=images,
                  precision="int8", input_size=(128, 128), min_agreement=0.0, latency_runs=0,
                  representative=(x[None] for x in calibration))
    dtypes = {t["name"]: t["dtype"] for t in
              Interpreter(str(tmp_path / "m_int8.tflite")).get_tensor_details()}
    norm = [d for n, d in dtypes.items() if "input_norm" in n]  # (sort indices: int32)
    assert np.float32 in norm and not {np.int8, np.uint8} & set(norm)
    assert sum(d == np.int8 for d in dtypes.values()) > 10


def test_int8_io_is_refused_for_a_standardizing_model(standardizing_model, held_out, tmp_path):
    names, verification, calibration = held_out
    with pytest.raises(ExportError, match="per-image normalization keeps it in float32.*"
                                          "--input-normalization none"):
        export_tflite(standardizing_model, tmp_path / "m.tflite", names=names,
                      verification_images=verification, precision="int8", io_type="uint8",
                      input_size=(128, 128), representative=(x[None] for x in calibration))
    assert not (tmp_path / "m.tflite").exists()


SIZE_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
from keras_unet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_export_without_room_on_disk_names_the_folder(trained_run, tmp_path):
    """No room for the converter's temporary SavedModel (a full disk, here a
    file-size limit): one line that says where and what to do."""
    import subprocess
    import sys

    run, _ = trained_run
    out = subprocess.run([sys.executable, "-c", SIZE_LIMITED, "export", str(run),
                          str(tmp_path / "out"), "--precision", "float32", "--input-size",
                          "64"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1
    assert "cannot write there (File too large)" in out.stderr and "TMPDIR" in out.stderr
    assert "Traceback" not in out.stderr and "NoneType" not in out.stderr
    assert not list((tmp_path / "out").glob("*.tflite"))
