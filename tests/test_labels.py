"""Tests for keras_unet.data.labels: labels.txt and the mask palette."""

import numpy as np
import PIL.Image
import pytest

from keras_unet.data.labels import (
    LabelMapError,
    apply_ignore_index,
    label_ids,
    labels_text,
    make_label_list,
    read_labels,
)
from keras_unet.data.readers import save_mask


def test_labels_txt_follows_the_labelme_convention(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("__ignore__\n_background_\n\ncat\npotted plant\n  dog  \n")
    names = read_labels(path)
    assert names == ["_background_", "cat", "potted plant", "dog"]
    assert label_ids(names) == {
        "__ignore__": 255, "_background_": 0, "cat": 1, "potted plant": 2, "dog": 3
    }


def test_background_is_zero_even_when_missing_or_late():
    assert make_label_list(["cat", "_background_", "dog"]) == ["_background_", "cat", "dog"]
    assert make_label_list(["cat"]) == ["_background_", "cat"]


def test_a_label_list_that_is_not_text_is_named(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(b"_background_\n\xff\xfecat\n")
    with pytest.raises(LabelMapError, match="labels.txt: the label list is not UTF-8 text"):
        read_labels(path)


def test_duplicate_labels_are_rejected(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("_background_\ncat\ncat\n")
    with pytest.raises(LabelMapError, match="labels.txt: label 'cat' appears twice"):
        read_labels(path)


def test_more_than_254_classes_is_an_error_not_a_wrap():
    make_label_list([f"c{i}" for i in range(254)])
    with pytest.raises(LabelMapError, match="255 classes do not fit"):
        make_label_list([f"c{i}" for i in range(255)])


def test_labels_text_round_trips(tmp_path):
    names = ["_background_", "a", "b"]
    (tmp_path / "labels.txt").write_text(labels_text(names))
    assert read_labels(tmp_path / "labels.txt") == names


def test_palette_masks_read_as_class_ids_with_pil_and_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    mask = np.array([[0, 1, 2, 3], [254, 255, 7, 0]], np.uint8)
    save_mask(tmp_path / "m.png", mask)
    image = PIL.Image.open(tmp_path / "m.png")
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), mask)
    decoded = tf.io.decode_png(tf.io.read_file(str(tmp_path / "m.png")), channels=3)
    np.testing.assert_array_equal(decoded.numpy()[..., 0], mask)
    # and the classes are visibly different colours
    colours = {tuple(c) for c in decoded.numpy().reshape(-1, 3)}
    assert len(colours) == len(np.unique(mask))


def test_a_plain_list_numbers_its_classes_from_zero_whatever_the_names(shared_datasets):
    names = read_labels(shared_datasets / "camvid" / "labels.txt")
    assert names[0] == "Sky" and names[3] == "Road" and names[11] == "Unlabelled"
    assert len(names) == 12 and "_background_" not in names


def test_ignore_must_be_the_first_line_or_absent(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("Sky\n__ignore__\nRoad\n")
    with pytest.raises(LabelMapError, match="__ignore__ must be the first line.*--ignore-index"):
        read_labels(path)


def test_both_forms_round_trip_through_labels_text(tmp_path):
    for names in (["Sky", "Building", "Road"], ["_background_", "nucleus"]):
        (tmp_path / "labels.txt").write_text(labels_text(names))
        assert read_labels(tmp_path / "labels.txt") == names
    assert labels_text(["Sky", "Road"]) == "Sky\nRoad\n"  # no __ignore__: no shift


def test_a_trailing_void_id_is_not_a_class():
    names = ["Sky", "Road", "Unlabelled"]
    assert apply_ignore_index(names, 2) == ["Sky", "Road"]
    assert apply_ignore_index(names, 11) == names  # a value past the map
    assert apply_ignore_index(names, None) == names
    with pytest.raises(LabelMapError, match="ignore_index 0 is class 'Sky' in the middle"):
        apply_ignore_index(names, 0)
    with pytest.raises(LabelMapError, match="expected a mask value 0..255"):
        apply_ignore_index(names, 300)
