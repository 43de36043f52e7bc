"""Tests for keras_unet.inference.predict: tiling, padding and the predict command."""

import numpy as np
import PIL.Image
import pytest

from keras_unet import build_unet
from keras_unet.cli import main
from keras_unet.inference.predict import (
    DEFAULT_FLIPS,
    InferenceError,
    Predictor,
    as_probabilities,
    gaussian_weights,
    load_predictor,
    predict_image,
    predict_tiled,
    tile_starts,
    trained_flips,
)
from keras_unet.training.recipes import STREET_AUGMENTATION


def keras_predictor(model, calls):
    def run(batch):
        calls.append(len(batch))
        return np.asarray(model.predict_on_batch(batch))
    return Predictor(run, None, model.input_shape[-1], 4, "memory")


@pytest.fixture(scope="module")
def small_fcn():
    """A fully convolutional U-Net with a small receptive field."""
    return build_unet((None, None, 3), 3, filters=4, depth=2, convs_per_block=1,
                      kernel_initializer="glorot_uniform")


@pytest.mark.parametrize("channels", [1, 4])
def test_logits_become_the_probabilities_keras_computes(channels):
    import keras

    logits = np.random.default_rng(0).normal(0, 40, (2, 5, 7, channels)).astype(np.float32)
    expected = (keras.ops.sigmoid(logits) if channels == 1
                else keras.ops.softmax(logits, axis=-1))
    probabilities = as_probabilities(lambda batch: batch, "logits")(logits)
    assert np.isfinite(probabilities).all()  # logits of +-100 do not overflow
    np.testing.assert_allclose(probabilities, np.asarray(expected), atol=1e-6)
    for kind in ("softmax", "sigmoid", None):
        assert as_probabilities(lambda batch: batch, kind)(logits) is logits


def test_tiles_cover_the_image_evenly():
    assert tile_starts(256, 64, 0.5) == [0, 32, 64, 96, 128, 160, 192]
    assert tile_starts(100, 64, 0.5)[-1] == 36 and tile_starts(50, 64, 0.5) == [0]


def test_gaussian_weights_peak_in_the_centre_and_stay_positive():
    w = gaussian_weights(64, 64)
    assert w.max() == pytest.approx(1.0) and w.min() > 0
    assert w[32, 32] > w[0, 0] * 1000


def test_tiled_prediction_equals_whole_image_prediction_away_from_borders(small_fcn):
    rng = np.random.default_rng(0)
    image = rng.random((160, 224, 3), dtype=np.float32)
    calls = []
    predictor = keras_predictor(small_fcn, calls)
    whole = predict_image(predictor, image)
    tiled = predict_tiled(predictor, image, (64, 64), overlap=0.5, batch_size=3)
    margin = 16
    np.testing.assert_allclose(tiled[margin:-margin, margin:-margin],
                               whole[margin:-margin, margin:-margin], atol=2e-3)
    # many tiles, never more than batch_size at once
    assert sum(calls) > 20 and max(calls[1:]) <= 3


def test_tta_of_a_flip_equivariant_model_changes_nothing():
    def identity(batch):
        return batch[..., :1]
    predictor = Predictor(identity, None, 1, 1, "memory")
    image = np.random.default_rng(1).random((32, 40, 1), dtype=np.float32)
    np.testing.assert_allclose(predict_image(predictor, image, tta=True), image, atol=1e-6)


def position_dependent(batch):
    """Not flip-equivariant: each output pixel sums the row up to it."""
    return np.cumsum(batch[..., :1], axis=2) + np.cumsum(batch[..., :1], axis=1) ** 2


@pytest.mark.parametrize("flips", [("horizontal",), ("horizontal", "vertical", "both")])
def test_tta_averages_over_the_training_flips_and_no_others(flips):
    predictor = Predictor(position_dependent, None, 1, 1, "memory", flips=flips)
    image = np.random.default_rng(2).random((1, 24, 32, 1), dtype=np.float32)
    axes = {"horizontal": (1,), "vertical": (0,), "both": (0, 1)}
    views = [position_dependent(image)[0]] + [
        np.flip(position_dependent(np.flip(image, tuple(a + 1 for a in axes[name])))[0],
                axes[name]) for name in flips]
    np.testing.assert_allclose(predict_image(predictor, image[0], tta=True),
                               np.mean(views, axis=0), rtol=1e-5)
    # The upside-down view changes this model's answer: leaving it out is seen.
    all_four = Predictor(position_dependent, None, 1, 1, "memory",
                         flips=("horizontal", "vertical", "both"))
    assert (flips == all_four.flips) == np.allclose(
        predict_image(all_four, image[0], tta=True), predict_image(predictor, image[0], tta=True))


def test_the_training_flips_come_from_what_the_model_records():
    every = ("horizontal", "vertical", "both")
    assert trained_flips({}) == DEFAULT_FLIPS == ("horizontal",)
    assert trained_flips({"augment": {}}) == every  # the default augmentation
    assert trained_flips({"augment": STREET_AUGMENTATION}) == ("horizontal",)
    assert trained_flips({"augment": {"flip": False, "rotate90": True}}) == ("both",)
    assert trained_flips({"augment": {"flip": False, "rotate90": False}}) == ()
    # flips and quarter turns: a vertical flip is a horizontal one turned 180
    assert trained_flips({"augment": {"vertical_flip": False}}) == every
    assert trained_flips({"training": {"augment": STREET_AUGMENTATION}}) == ("horizontal",)
    # Settings of another version, or a broken record, do not stop a model loading.
    assert trained_flips({"augment": {**STREET_AUGMENTATION, "future_option": 1}}) == (
        "horizontal",)
    assert trained_flips({"augment": ["not", "settings"]}) == DEFAULT_FLIPS
    assert trained_flips({"test_time_flips": ["horizontal"], "augment": {}}) == (
        "horizontal",)  # an export's sidecar says it outright
    assert load_predictor("nuclei_dsb2018").flips == every  # its card's training


def test_odd_sizes_are_padded_and_cropped_back(small_fcn):
    predictor = keras_predictor(small_fcn, [])
    out = predict_image(predictor, np.zeros((37, 53, 3), np.float32))
    assert out.shape == (37, 53, 3)


def test_images_smaller_than_the_tile_work(small_fcn):
    predictor = keras_predictor(small_fcn, [])
    out = predict_tiled(predictor, np.zeros((20, 30, 3), np.float32), (64, 64))
    assert out.shape == (20, 30, 3)


def model_and_images(model, tmp_path, names, size=(40, 50)):
    """`(model file, folder)`: `model` saved and random RGB images of `names`."""
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    images = tmp_path / "in"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (*size, 3), np.uint8)
    for name in names:
        PIL.Image.fromarray(pixels).save(images / name)
    return model_path, images


def test_predict_command_writes_masks_and_skips_bad_images(small_fcn, tmp_path, capsys):
    model_path, images = model_and_images(small_fcn, tmp_path, ("a.png", "b.png"))
    (images / "broken.png").write_bytes(b"no image")
    code = main(["predict", str(model_path), str(images), str(tmp_path / "out"),
                 "--probabilities"])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png" in captured.err and "2 images predicted, 1 failed" in captured.out
    mask = PIL.Image.open(tmp_path / "out/masks/a.png")
    assert mask.mode == "P" and mask.size == (50, 40)
    assert np.load(tmp_path / "out/probabilities/b.npy").shape == (40, 50, 3)
    assert (tmp_path / "out/overlays/a.png").is_file()
    # No background class, no objects: nothing to say per image, so no CSV.
    assert not (tmp_path / "out/predictions.csv").exists()


@pytest.fixture
def tflite_model(small_fcn, tmp_path):
    """A float32 `.tflite` of `small_fcn` at 32x32, converted here."""
    from keras_unet.export import convert, fixed_size_model

    path = tmp_path / "m.tflite"
    path.write_bytes(convert(fixed_size_model(small_fcn, (32, 32)), "float32"))
    return path


def test_a_model_xnnpack_refuses_runs_on_the_builtin_kernels(tflite_model, monkeypatch, caplog):
    """XNNPACK fails to prepare some valid int8 models ("failed to create
    XNNPACK runtime"): simulated here, the predictor must still run."""
    from ai_edge_litert import interpreter as litert

    image = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    expected = load_predictor(tflite_model)(image)

    class NoXnnpack(litert.Interpreter):
        def __init__(self, *args, **kwargs):
            self.delegated = kwargs.get("experimental_op_resolver_type") in (
                None, litert.OpResolverType.AUTO)
            super().__init__(*args, **kwargs)

        def allocate_tensors(self):
            if self.delegated:
                raise RuntimeError("failed to create XNNPACK runtime")
            return super().allocate_tensors()

    monkeypatch.setattr(litert, "Interpreter", NoXnnpack)
    predictor = load_predictor(tflite_model)
    np.testing.assert_allclose(predictor(image), expected, atol=1e-5)
    assert "XNNPACK cannot run this model" in caplog.text


def test_a_file_that_is_not_a_litert_model_is_named_in_the_error(tmp_path):
    path = tmp_path / "notes.tflite"
    path.write_text("not a model")
    with pytest.raises(InferenceError, match="notes.tflite: not a LiteRT model"):
        load_predictor(path)


def test_a_fresh_process_loads_every_model_build_unet_makes(tmp_path, run_python):
    # The CLI loads models in a process that never built one: every custom
    # layer (per-image standardization, the NumPy He-normal initializer)
    # must be registered by the loader itself.
    path = tmp_path / "m.keras"
    build_unet((None, None, 3), 1, filters=4, depth=2, input_normalization="per_image").save(path)
    code = ("from keras_unet.inference.predict import load_predictor; "
            f"p = load_predictor(r'{path}', labels=['bg', 'fg']); print(p.channels)")
    assert run_python(code).strip().splitlines()[-1] == "3"


def test_predicting_into_the_input_folder_twice_never_reads_its_own_outputs(
        small_fcn, tmp_path, capsys):
    model_path, images = model_and_images(small_fcn, tmp_path, ("a.png", "b.png"), (32, 32))
    for _ in range(2):
        code = main(["predict", str(model_path), str(images), str(images)])
        out = capsys.readouterr().out
        assert code == 0 and "2 images predicted, 0 failed" in out
    written = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    assert written == ["a.png", "b.png", "masks/a.png", "masks/b.png",
                       "overlays/a.png", "overlays/b.png"]


def test_images_that_would_share_outputs_are_reported_and_the_rest_predicted(
        small_fcn, tmp_path, capsys):
    model_path, images = model_and_images(small_fcn, tmp_path, ("a.png", "a.jpg", "c.png"),
                                          (32, 32))
    code = main(["predict", str(model_path), str(images), str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1 and "1 images predicted, 2 failed" in captured.out
    assert "a.jpg and a.png would write the same masks/a.png: rename one" in captured.err
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["c.png"]
