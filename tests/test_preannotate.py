"""Tests for keras_unet.inference.preannotate and `predict --labelme`.

References: the predicted masks themselves (converted to LabelMe and back
with our own `labelme2masks`, they must come back), labelme's own loader
(`labelme.LabelFile`) for every written file, and hand-edited files for the
never-overwrite rule.
"""

import json
import shutil
import warnings

import numpy as np
import PIL.Image
import pytest

from keras_unet.data.convert import labelme_to_masks
from keras_unet.data.instances import boundary_target
from keras_unet.data.readers import read_image, read_instances
from keras_unet.inference.preannotate import LabelMeOutput, is_prediction, shapes_fingerprint
from keras_unet.inference.predict import Predictor, predict_files

NAMES = ["_background_", "nucleus"]


@pytest.fixture(scope="module")
def images(nuclei_dataset, tmp_path_factory):
    """Six real nucleus images (with their true instances) in a folder of their own."""
    folder = tmp_path_factory.mktemp("images")
    for path in sorted((nuclei_dataset / "images").glob("*.png"))[:6]:
        shutil.copy(path, folder / path.name)
    return folder


def bright_is_nucleus(batch):
    """A 'model' whose masks are real nucleus shapes: grey value > 0.5 is foreground.

    Its masks have the holes, islands and single pixels a real model makes."""
    grey = batch.mean(-1, keepdims=True)
    return np.clip((grey - 0.25) * 2, 0, 1)


def threshold_predictor():
    return Predictor(bright_is_nucleus, None, 3, 1, "threshold.keras", "semantic", NAMES)


def instance_oracle(nuclei_dataset, images):
    """An instance 'model' that predicts the true objects of each image."""
    table = {}
    for path in sorted(images.glob("*.png")):
        ids = read_instances(nuclei_dataset / "instances" / path.name)
        target = boundary_target((ids > 0).astype(np.uint8), ids, 2)
        table[read_image(path, 3).tobytes()] = np.eye(3, dtype=np.float32)[target]
    return Predictor(lambda batch: np.stack([table[x.tobytes()] for x in batch]), None, 3, 1,
                     "oracle.keras", "instances", NAMES)


def back_to_masks(folder, out):
    summary = labelme_to_masks(folder, out, labels=NAMES, instances=True, workers=1)
    assert not summary.errors, summary.errors
    return out


def read(path):
    return np.asarray(PIL.Image.open(path))


def test_predicted_files_convert_back_to_the_predicted_masks(images, tmp_path):
    out = tmp_path / "pred"
    summary = predict_files(threshold_predictor(), images, out,
                            labelme=LabelMeOutput(epsilon=0))
    assert summary.labelme_written == 6
    for path in sorted(images.glob("*.png")):
        shutil.copy(path, out / path.name)  # LabelMe folders hold the images beside the JSON
    back = back_to_masks(out, tmp_path / "back")
    for mask in sorted((out / "masks").glob("*.png")):
        np.testing.assert_array_equal(read(back / "masks" / mask.name), read(mask))


def test_the_default_simplification_keeps_995_of_the_pixels(images, tmp_path):
    out = tmp_path / "pred"
    predict_files(threshold_predictor(), images, out, labelme=LabelMeOutput())
    points_default = sum(len(s["points"]) for p in out.glob("*.json")
                         for s in json.loads(p.read_text())["shapes"])
    for path in images.glob("*.png"):
        shutil.copy(path, out / path.name)
    back = back_to_masks(out, tmp_path / "back")
    changed = total = 0
    for mask in (out / "masks").glob("*.png"):
        predicted, returned = read(mask), read(back / "masks" / mask.name)
        changed += int((predicted != returned).sum())
        total += predicted.size
    assert changed / total <= 0.005
    exact = tmp_path / "exact"
    predict_files(threshold_predictor(), images, exact, labelme=LabelMeOutput(epsilon=0))
    points_exact = sum(len(s["points"]) for p in exact.glob("*.json")
                       for s in json.loads(p.read_text())["shapes"])
    assert points_default < 0.6 * points_exact


def test_an_instance_model_writes_one_polygon_per_object(nuclei_dataset, images, tmp_path):
    out = tmp_path / "pred"
    predict_files(instance_oracle(nuclei_dataset, images), images, out,
                  labelme=LabelMeOutput(epsilon=0), min_size=1)
    for path in images.glob("*.png"):
        shutil.copy(path, out / path.name)
    back = back_to_masks(out, tmp_path / "back")
    for path in sorted(images.glob("*.png")):
        document = json.loads((out / f"{path.stem}.json").read_text())
        groups = {s["group_id"] for s in document["shapes"] if s["label"] == "nucleus"}
        predicted = read(out / "instances" / path.name)
        assert groups == set(np.unique(predicted)) - {0}
        np.testing.assert_array_equal(read(back / "masks" / path.name),
                                      read(out / "masks" / path.name))
        # the objects come back: the same partition of the pixels, numbered anew
        returned = read(back / "instances" / path.name)
        pairs = set(zip(predicted.ravel().tolist(), returned.ravel().tolist()))
        assert len(pairs) == len(np.unique(predicted)) == len(np.unique(returned))


def test_every_written_file_opens_in_labelme_without_a_warning(images, tmp_path):
    labelme = pytest.importorskip("labelme")
    out = tmp_path / "pred"
    predict_files(threshold_predictor(), images, out,
                  labelme=LabelMeOutput(embed_images=False))
    embedded = tmp_path / "embedded"
    predict_files(threshold_predictor(), images, embedded,
                  labelme=LabelMeOutput(embed_images=True))
    for path in [*out.glob("*.json"), *embedded.glob("*.json")]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = labelme.LabelFile(str(path))
        document = json.loads(path.read_text())
        assert len(loaded.shapes) == len(document["shapes"])
        assert loaded.flags == {"predicted": True}
        assert (document["imageData"] is None) == (path.parent == out)
        image = PIL.Image.open(images / f"{path.stem}.png")
        assert (document["imageHeight"], document["imageWidth"]) == (image.height,
                                                                     image.width)


def test_files_record_the_model_and_each_shape_its_probability(images, tmp_path):
    out = tmp_path / "pred"
    predict_files(threshold_predictor(), images, out, labelme=LabelMeOutput())
    # The first file whose prediction has nuclei (a brightfield image has none
    # for this brightness threshold).
    json_path, document = next(
        (path, doc) for path in sorted(out.glob("*.json"))
        for doc in [json.loads(path.read_text())]
        if any(s["label"] == "nucleus" for s in doc["shapes"]))
    entry = document["keras_unet"]
    assert entry["model"] == "threshold.keras" and entry["predicted"] is True
    probabilities = [float(s["description"][2:]) for s in document["shapes"]]
    assert all(0.5 <= p <= 1.0 for p in probabilities)
    assert entry["min_probability"] == pytest.approx(min(
        p for p, s in zip(probabilities, document["shapes"]) if s["label"] == "nucleus"),
        abs=1e-3)
    assert is_prediction(document)
    image_path = (json_path.parent / document["imagePath"]).resolve()
    assert image_path == (images / f"{json_path.stem}.png").resolve()
    assert not document["imagePath"].startswith("/")  # relative, so the folders can move


def test_a_persons_annotation_is_never_overwritten(images, tmp_path):
    out = tmp_path / "pred"
    one = sorted(images.glob("*.png"))[0].stem
    out.mkdir()
    human = {"version": "5.5.0", "flags": {}, "shapes": [], "imagePath": f"{one}.png",
             "imageData": None, "imageHeight": 1, "imageWidth": 1}
    (out / f"{one}.json").write_text(json.dumps(human))
    summary = predict_files(threshold_predictor(), images, out, labelme=LabelMeOutput())
    assert json.loads((out / f"{one}.json").read_text()) == human
    assert [p.endswith(f"{one}.json") for p, _ in summary.labelme_kept] == [True]
    assert "a person's annotation" in summary.labelme_kept[0][1]

    # earlier predictions stay unless asked, then are replaced
    others = sorted(p for p in out.glob("*.json") if p.stem != one)
    summary = predict_files(threshold_predictor(), images, out, labelme=LabelMeOutput())
    assert summary.labelme_written == 0
    assert all("already predicted" in reason for _, reason in summary.labelme_kept[1:])
    # a person edits one prediction (moves a point) and unticks another's flag
    edited = json.loads(others[0].read_text())
    edited["shapes"][0]["points"][0][0] += 3
    others[0].write_text(json.dumps(edited))
    unticked = json.loads(others[1].read_text())
    unticked["flags"]["predicted"] = False
    others[1].write_text(json.dumps(unticked))
    # ... and writes only a description on a third, a shape flag on a fourth
    described = json.loads(others[2].read_text())
    described["shapes"][0]["description"] = "checked: a dividing cell"
    others[2].write_text(json.dumps(described))
    flagged = json.loads(others[3].read_text())
    flagged["shapes"][0]["flags"] = {"unsure": True}
    others[3].write_text(json.dumps(flagged))
    summary = predict_files(threshold_predictor(), images, out,
                            labelme=LabelMeOutput(overwrite_predictions=True))
    assert summary.labelme_written == len(others) - 4
    assert json.loads(others[0].read_text()) == edited
    assert json.loads(others[1].read_text()) == unticked
    assert json.loads(others[2].read_text()) == described
    assert json.loads(others[3].read_text()) == flagged
    assert json.loads((out / f"{one}.json").read_text()) == human


def test_the_fingerprint_ignores_formatting_and_sees_geometry():
    shape = {"label": "a", "points": [[1.0, 2.0], [3.0, 4.0]], "group_id": None,
             "shape_type": "polygon", "flags": {}, "description": "p=0.9"}
    moved = {**shape, "points": [[1.0, 2.0], [3.0, 5.0]]}
    retyped = {**shape, "points": [[1, 2], [3, 4]], "description": "checked", "mask": None}
    assert shapes_fingerprint([shape]) == shapes_fingerprint([retyped])
    assert shapes_fingerprint([shape]) != shapes_fingerprint([moved])
