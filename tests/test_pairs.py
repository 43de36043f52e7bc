"""Tests for keras_unet.data.pairs: pairing, checking and splitting."""

import numpy as np
import PIL.Image
import pytest

from keras_unet.data.pairs import DatasetError, check_dataset, load_dataset, split_dataset
from keras_unet.data.readers import save_mask


def make_pairs(root, n=4, size=(16, 20), mask_values=(0, 1)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "labels.txt").write_text("__ignore__\n_background_\nthing\n")
    rng = np.random.default_rng(0)
    for i in range(n):
        PIL.Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            root / "images" / f"p{i}.jpg")
        save_mask(root / "masks" / f"p{i}.png",
                  rng.choice(mask_values, size).astype(np.uint8))
    return root


def test_pairs_are_matched_by_name_and_counted(tmp_path):
    dataset = load_dataset(make_pairs(tmp_path / "d"))
    assert [p.rsplit("/", 1)[1] for p in dataset.images] == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg"]
    assert dataset.names == ["_background_", "thing"]
    counts = check_dataset(dataset)
    assert sum(counts.values()) == 4 * 16 * 20


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="images: no images"):
        load_dataset(tmp_path)


def test_a_labelme_folder_given_as_a_dataset_says_to_convert_it(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"a folder of JSON files, not a dataset folder .*"
                                           r"keras-unet labelme2masks"):
        load_dataset(tmp_path)
    (tmp_path / "a.json").unlink()  # an empty folder: the folder that is missing
    with pytest.raises(DatasetError, match=r"images: folder not found"):
        load_dataset(tmp_path)


def test_image_without_mask_names_the_image(tmp_path):
    root = make_pairs(tmp_path / "d")
    (root / "masks" / "p2.png").unlink()
    with pytest.raises(DatasetError, match=r"image .*p2.jpg has no mask"):
        load_dataset(root)


def test_mask_with_the_wrong_size_names_the_mask(tmp_path):
    root = make_pairs(tmp_path / "d")
    save_mask(root / "masks" / "p1.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"p1.png: mask is 10x10 but its image .*16x20"):
        check_dataset(load_dataset(root))


def test_mask_values_outside_the_label_map_name_the_mask(tmp_path):
    root = make_pairs(tmp_path / "d", mask_values=(0, 1, 7))
    with pytest.raises(DatasetError, match=r"p0.png: mask values \[7\] are outside"):
        check_dataset(load_dataset(root))


def test_binary_0_255_masks_hint_at_foreground_value(tmp_path):
    root = make_pairs(tmp_path / "d", mask_values=(0, 255))
    (root / "labels.txt").unlink()
    with pytest.raises(DatasetError, match="no labels.txt"):
        load_dataset(root)
    dataset = load_dataset(root, foreground_value=255)
    counts = check_dataset(dataset)
    assert set(counts) == {0, 1}


def test_binary_0_255_masks_read_with_a_label_map_are_refused_not_read_as_ignore(tmp_path):
    """With labels.txt and no foreground value, 255 is ignore: the foreground
    would vanish from training and scoring without a word."""
    root = make_pairs(tmp_path / "d", mask_values=(0, 255))
    with pytest.raises(DatasetError, match=r"masks: no mask has a pixel of any class but 0 "
                                           r"\(_background_\).*--foreground-value 255"):
        check_dataset(load_dataset(root))
    assert set(check_dataset(load_dataset(root, foreground_value=255))) == {0, 1}
    # Ignore regions beside real classes are what 255 is for.
    save_mask(root / "masks" / "p0.png", np.ones((16, 20), np.uint8))
    assert set(check_dataset(load_dataset(root))) == {0, 1}


def test_unreadable_image_names_the_file(tmp_path):
    root = make_pairs(tmp_path / "d")
    (root / "images" / "p3.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"p3.jpg: unreadable image"):
        check_dataset(load_dataset(root))


def test_split_is_reproducible_and_explicit_lists_win(tmp_path):
    dataset = load_dataset(make_pairs(tmp_path / "d", n=10))
    a_train, a_val = split_dataset(dataset, 0.3, seed=1)
    b_train, b_val = split_dataset(dataset, 0.3, seed=1)
    assert a_val.images == b_val.images and len(a_val.images) == 3
    assert not set(a_train.images) & set(a_val.images)
    _, other = split_dataset(dataset, 0.3, seed=2)
    assert other.images != a_val.images
    _, named = split_dataset(dataset, val_names=["p4", "p7"])
    assert named.stems == ["p4", "p7"]
    # A list of file names (or paths) names the same pairs.
    assert split_dataset(dataset, val_names=["p4.png", "images/p7.jpg"])[1].stems == ["p4", "p7"]
    with pytest.raises(DatasetError, match=r"names pairs not in the dataset: \['nope', "
                                           r"'p4.txt'\] \(a line is a pair's name, e.g. 'p0'"):
        split_dataset(dataset, val_names=["nope", "p4.txt"])


def raw(path):
    return np.asarray(PIL.Image.open(path))


def test_a_plain_label_map_keeps_the_datasets_ids(camvid_pairs):
    dataset = load_dataset(camvid_pairs)
    assert dataset.names[:2] == ["Sky", "Building"] and dataset.num_classes == 12
    assert not dataset.has_background
    counts = check_dataset(dataset)
    truth = sum(np.bincount(raw(m).ravel(), minlength=256) for m in dataset.masks)
    assert counts == {i: int(n) for i, n in enumerate(truth) if n}  # no id moved


def test_an_ignore_index_voids_the_id_without_touching_the_files(camvid_pairs):
    before = [raw(m) for m in sorted((camvid_pairs / "masks").glob("*.png"))]
    dataset = load_dataset(camvid_pairs, ignore_index=11)
    assert dataset.names[-1] == "Bicyclist" and dataset.num_classes == 11
    for index, original in enumerate(before):
        mask = dataset.read_mask(index)
        np.testing.assert_array_equal(mask == 255, original == 11)
        np.testing.assert_array_equal(mask[original != 11], original[original != 11])
    counts = check_dataset(dataset)
    assert 11 not in counts and 255 not in counts
    after = [raw(m) for m in sorted((camvid_pairs / "masks").glob("*.png"))]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    # The subsets of a split keep it.
    train, val = split_dataset(dataset, 0.5)
    assert train.ignore_index == val.ignore_index == 11


def test_an_undeclared_void_value_lists_the_values_and_the_fix(camvid_pairs, tmp_path):
    (tmp_path / "labels.txt").write_text(
        "\n".join((camvid_pairs / "labels.txt").read_text().splitlines()[:11]) + "\n")
    dataset = load_dataset(camvid_pairs, labels=tmp_path / "labels.txt")
    with pytest.raises(DatasetError, match=r"mask values \[11\] are outside the label map "
                                           r"\(ids 0..10: Sky, Building, .*values found: "
                                           r"\[0, 1, .*--ignore-index 11"):
        check_dataset(dataset)


def test_instance_masks_that_do_not_lie_on_their_class_masks_are_refused(tiny_nuclei, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_nuclei, data)
    check_dataset(load_dataset(data), instances=True)  # as converted: they agree
    path = sorted((data / "instances").glob("*.png"))[2]
    ids = raw(path)
    PIL.Image.fromarray(np.roll(ids, 6, axis=1)).save(path)  # shifted by 6 pixels
    with pytest.raises(DatasetError, match=rf"{path.name}: the objects do not lie on the "
                                           r"classes of .*a shifted, flipped or mismatched"):
        check_dataset(load_dataset(data), instances=True)
