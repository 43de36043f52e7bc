"""Tests for keras_unet.data.labelme: reading LabelMe files and rasterizing shapes.

References: hand-computed pixel counts for every shape type, and labelme's
own converter on labelme's example annotations. `labelme_reference` below
does what labelme's `examples/semantic_segmentation/labelme2voc.py` does per
file: `labelme.LabelFile` to read, `labelme.utils.img_data_to_arr` for the
image, `labelme.utils.shapes_to_label` with `__ignore__` = -1 (written as 255
by labelme's `lblsave`).
"""

import base64
import io
import json

import numpy as np
import PIL.Image
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_unet.data.labelme import (
    LabelMeError,
    Shape,
    load_image,
    rasterize,
    read_annotation,
)
from keras_unet.data.labels import label_ids, read_labels

IDS = label_ids(["_background_", "a", "b"])


def write_json(path, shapes, image_path="img.png", size=(40, 60), **extra):
    doc = {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": size[0],
        "imageWidth": size[1],
        **extra,
    }
    path.write_text(json.dumps(doc))
    return path


def shape(label, points, shape_type="polygon", group_id=None, **extra):
    return {"label": label, "points": points, "shape_type": shape_type,
            "group_id": group_id, **extra}


def draw(shapes, height=60, width=80, ids=IDS):
    parsed = [Shape(s["label"], s.get("shape_type") or "polygon",
                    [tuple(map(float, p)) for p in s["points"]], s.get("group_id"),
                    s.get("mask")) for s in shapes]
    return rasterize(parsed, height, width, ids)


# --- hand-made shapes with exact pixel counts -------------------------------


def test_rectangle_includes_both_corners():
    classes, _ = draw([shape("a", [[10, 5], [60, 40]], "rectangle")])
    assert (classes == 1).sum() == 51 * 36
    assert classes[5, 10] == 1 and classes[40, 60] == 1 and classes[41, 60] == 0


def test_rectangle_corners_in_any_order_give_the_same_box():
    forward, _ = draw([shape("a", [[10, 5], [60, 40]], "rectangle")])
    backward, _ = draw([shape("a", [[60, 5], [10, 40]], "rectangle")])
    np.testing.assert_array_equal(forward, backward)


def test_axis_aligned_polygon_covers_its_outline():
    classes, _ = draw([shape("a", [[10, 10], [19, 10], [19, 29], [10, 29]])])
    assert (classes == 1).sum() == 10 * 20


def test_circle_radius_comes_from_the_edge_point():
    classes, _ = draw([shape("a", [[40, 30], [50, 30]], "circle")])
    yy, xx = np.mgrid[:60, :80]
    inside = (xx - 40) ** 2 + (yy - 30) ** 2 <= 10**2
    # Pillow's ellipse is the disc up to its rasterized rim.
    assert abs(int((classes == 1).sum()) - int(inside.sum())) <= 2 * np.pi * 10
    assert classes[30, 40] == 1 and classes[30, 49] == 1 and classes[30, 52] == 0


def test_point_is_a_disc_of_radius_5():
    classes, _ = draw([shape("a", [[40, 30]], "point")])
    ys, xs = np.nonzero(classes)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (35, 45, 25, 35)


def test_line_is_10_pixels_wide():
    classes, _ = draw([shape("a", [[10, 30], [70, 30]], "line")])
    assert (classes[:, 40] == 1).sum() == 10


def test_linestrip_has_round_joints():
    sharp = [[10, 50], [40, 10], [70, 50]]
    classes, _ = draw([shape("a", sharp, "linestrip")])
    # Both segments are drawn 10 px wide and the apex is covered.
    assert classes[10, 40] == 1 and classes[50, 12] == 1 and classes[50, 68] == 1
    yy, xx = np.mgrid[:60, :80]
    apex_disc = (xx - 40) ** 2 + (yy - 10) ** 2 <= 16
    assert (classes[apex_disc] == 1).all()


def test_oriented_rectangle_is_a_four_point_polygon():
    pts = [[20, 10], [40, 30], [30, 40], [10, 20]]
    oriented, _ = draw([shape("a", pts, "oriented_rectangle")])
    polygon, _ = draw([shape("a", pts)])
    np.testing.assert_array_equal(oriented, polygon)


def mask_shape(label, patch, top_left):
    buffer = io.BytesIO()
    PIL.Image.fromarray(patch.astype(np.uint8) * 255).save(buffer, format="PNG")
    x, y = top_left
    h, w = patch.shape
    return shape(label, [[x, y], [x + w - 1, y + h - 1]], "mask",
                 mask=base64.b64encode(buffer.getvalue()).decode())


def test_mask_patch_lands_at_the_rounded_top_left_and_is_clipped(tmp_path):
    patch = np.ones((10, 12), bool)
    patch[0, 0] = False
    path = write_json(tmp_path / "m.json", [mask_shape("a", patch, (73.4, 54.6))],
                      size=(60, 80))
    classes, _ = rasterize(read_annotation(path).shapes, 60, 80, IDS)
    # Rounded top-left (73, 55); the patch's own (0, 0) pixel is off; only
    # columns 73..79 and rows 55..59 lie inside the image.
    assert classes[55, 73] == 0 and classes[55, 74] == 1 and classes[56, 73] == 1
    assert (classes == 1).sum() == 7 * 5 - 1


def test_points_outside_the_image_are_clipped_not_rejected():
    classes, _ = draw([shape("a", [[-100, -100], [200, -100], [200, 200], [-100, 200]])])
    assert (classes == 1).all()


def test_later_shapes_overwrite_earlier_and_background_cuts_holes():
    classes, _ = draw([
        shape("a", [[0, 0], [79, 59]], "rectangle"),
        shape("b", [[10, 10], [29, 29]], "rectangle"),
        shape("_background_", [[50, 10], [59, 19]], "rectangle"),
        shape("__ignore__", [[0, 50], [9, 59]], "rectangle"),
    ])
    assert (classes == 2).sum() == 400
    assert (classes == 0).sum() == 100
    assert (classes == 255).sum() == 100
    assert (classes == 1).sum() == 80 * 60 - 600


def test_instances_per_label_and_group_id():
    _, instances = draw([
        shape("a", [[0, 0], [9, 9]], "rectangle", group_id=1),
        shape("a", [[20, 0], [29, 9]], "rectangle", group_id=1),   # same instance
        shape("b", [[40, 0], [49, 9]], "rectangle", group_id=1),   # other label
        shape("a", [[0, 20], [9, 29]], "rectangle"),               # own instance
        shape("a", [[20, 20], [29, 29]], "rectangle"),             # own instance
        shape("_background_", [[0, 0], [4, 4]], "rectangle"),
    ])
    assert instances[5, 5] == instances[5, 25] == 1
    assert instances[5, 45] == 2
    assert len({instances[25, 5], instances[25, 25]}) == 2
    assert instances[2, 2] == 0
    assert set(np.unique(instances)) == {0, 1, 2, 3, 4}


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 50),
    width=st.integers(1, 50),
    points=st.lists(
        st.tuples(st.floats(-100, 150, allow_nan=False), st.floats(-100, 150, allow_nan=False)),
        min_size=3, max_size=12,
    ),
)
def test_random_polygons_never_crash_or_draw_outside_their_box(height, width, points):
    classes, instances = draw([shape("b", [list(p) for p in points])], height, width)
    assert classes.shape == (height, width) and instances.shape == (height, width)
    assert set(np.unique(classes)) <= {0, 2}
    ys, xs = np.nonzero(classes)
    if len(xs):
        px, py = np.array(points).T
        assert xs.min() >= np.floor(px.min()) - 1 and xs.max() <= np.ceil(px.max()) + 1
        assert ys.min() >= np.floor(py.min()) - 1 and ys.max() <= np.ceil(py.max()) + 1


# --- reading files ----------------------------------------------------------


def save_png(path, array, mode=None):
    PIL.Image.fromarray(array, mode).save(path)
    return path


def test_missing_shape_type_and_group_id_mean_polygon_and_none(tmp_path):
    legacy = {"label": "a", "points": [[1, 1], [5, 1], [5, 5]]}  # LabelMe 3.x
    path = write_json(tmp_path / "old.json", [legacy], version="3.16.7", lineColor=[0, 255, 0, 128])
    (parsed,) = read_annotation(path).shapes
    assert (parsed.shape_type, parsed.group_id) == ("polygon", None)


def test_embedded_image_data_wins_over_image_path(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buffer, format="PNG")
    path = write_json(tmp_path / "e.json", [], image_path="does/not/exist.png",
                      imageData=base64.b64encode(buffer.getvalue()).decode())
    np.testing.assert_array_equal(load_image(read_annotation(path)), rgb)


def test_windows_image_path_resolves(tmp_path):
    (tmp_path / "imgs").mkdir()
    save_png(tmp_path / "imgs" / "x.png", np.zeros((40, 60, 3), np.uint8))
    path = write_json(tmp_path / "w.json", [], image_path="imgs\\x.png")
    assert load_image(read_annotation(path)).shape == (40, 60, 3)


def test_moved_folder_falls_back_to_the_image_name_beside_the_json(tmp_path):
    save_png(tmp_path / "photo.png", np.zeros((40, 60, 3), np.uint8))
    save_png(tmp_path / "w.png", np.full((40, 60, 3), 9, np.uint8))  # same stem as json
    path = write_json(tmp_path / "w.json", [], image_path="..\\old\\place\\photo.png")
    assert load_image(read_annotation(path)).max() == 0  # paired by imagePath


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "I;16"])
def test_any_image_mode_decodes_to_rgb(tmp_path, mode):
    grey = np.arange(40 * 60, dtype=np.uint8).reshape(40, 60)
    rgb = np.stack([grey, grey, grey], -1)
    if mode == "I;16":
        image = PIL.Image.fromarray(grey.astype(np.uint16) * 257)
    else:
        image = PIL.Image.fromarray(rgb).convert(mode)
    image.save(tmp_path / "img.png")
    out = load_image(read_annotation(write_json(tmp_path / "a.json", [])))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_palette_image_resolves_to_its_colours(tmp_path):
    colours = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30]], np.uint8)
    index = (np.arange(40 * 60).reshape(40, 60) % 3).astype(np.uint8)
    image = PIL.Image.fromarray(index, "P")
    image.putpalette(colours.ravel().tolist())
    image.save(tmp_path / "img.png")
    out = load_image(read_annotation(write_json(tmp_path / "a.json", [])))
    np.testing.assert_array_equal(out, colours[index])


def oriented_versions():
    """(orientation, stored image) pairs whose upright view is UPRIGHT."""
    inverse = {1: None, 2: PIL.Image.Transpose.FLIP_LEFT_RIGHT,
               3: PIL.Image.Transpose.ROTATE_180, 4: PIL.Image.Transpose.FLIP_TOP_BOTTOM,
               5: PIL.Image.Transpose.TRANSPOSE, 6: PIL.Image.Transpose.ROTATE_90,
               7: PIL.Image.Transpose.TRANSVERSE, 8: PIL.Image.Transpose.ROTATE_270}
    upright = PIL.Image.fromarray(UPRIGHT)
    return [(o, upright if t is None else upright.transpose(t)) for o, t in inverse.items()]


UPRIGHT = np.zeros((40, 64, 3), np.uint8)
UPRIGHT[4:14, 8:24] = 255  # a white block near the top-left corner


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_the_labelme_app(tmp_path, orientation):
    labelme = pytest.importorskip("labelme")
    stored = dict(oriented_versions())[orientation]
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "img.jpg", quality=100, exif=exif.tobytes())
    path = write_json(tmp_path / "a.json", [shape("a", [[8, 4], [23, 13]], "rectangle")],
                      image_path="img.jpg", size=(40, 64))
    image = load_image(read_annotation(path))
    saved = PIL.Image.open(tmp_path / "img.jpg")
    reference = np.asarray(labelme.utils.apply_exif_orientation(saved))
    np.testing.assert_array_equal(image, reference)
    # The annotated rectangle (upright coordinates) sits on the white block.
    classes, _ = rasterize(read_annotation(path).shapes, *image.shape[:2], IDS)
    assert image[classes == 1].mean() > 240 and image[classes == 0].mean() < 20


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "invalid JSON"),
        ('{"version": "5.0"}', "no 'shapes' list"),
    ],
)
def test_unreadable_files_name_the_problem(tmp_path, content, reason):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LabelMeError, match=reason) as err:
        read_annotation(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "bad, reason",
    [
        (shape("a", [[1, 1], [2, 2]]), "degenerate shape, needs >= 3 points, has 2"),
        (shape("a", [[1, 1]], "rectangle"), "needs 2 points, has 1"),
        (shape("a", [[1, 1], [2, 2]], "ellipse"), "unknown shape_type 'ellipse'"),
        (shape("a", [[1, "x"], [2, 2]], "line"), "points must be"),
        (shape("a", [[1, 1], [5, 5]], "mask"), "mask shape without 'mask' data"),
    ],
)
def test_bad_shapes_name_the_file_shape_and_problem(tmp_path, bad, reason):
    path = write_json(tmp_path / "bad.json", [bad])
    with pytest.raises(LabelMeError, match=reason) as err:
        read_annotation(path)
    assert "bad.json" in str(err.value) and "shape #0" in str(err.value)


@pytest.mark.parametrize(
    "bad, reason",
    [
        (shape(None, [[1, 1], [2, 2], [3, 1]]), "label must be a string, got null"),
        (shape(7, [[1, 1], [2, 2], [3, 1]]), "label must be a string, got an integer"),
        (shape("a\nb", [[1, 1], [2, 2], [3, 1]]), "holds a line break"),
        (shape("  ", [[1, 1], [2, 2], [3, 1]]), "label is empty"),
        (shape("a", [[1, 1], [2, 2], [3, 1]], ["polygon"]), "shape_type must be a string"),
        (shape("a", [[1, 1], [2, 2], [3, 1]], group_id=[1]), "group_id must be an integer"),
        (shape("a", [[1, 1], [2, 2], [3, 1]], group_id=True), "group_id must be an integer"),
        (shape("a", [[1, 1], [1e300, 2], [3, 1]]), "points must be finite numbers within"),
        (shape("a", [[1, 1], [5, 5]], "mask", mask=5), "'mask' must be a base64 string"),
    ],
)
def test_malformed_shape_fields_name_the_file_shape_and_field(tmp_path, bad, reason):
    path = write_json(tmp_path / "bad.json", [bad])
    with pytest.raises(LabelMeError, match=reason) as err:
        read_annotation(path)
    assert "bad.json: shape #0" in str(err.value)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("imagePath", 3, "imagePath must be a string or null, got an integer"),
        ("imageData", ["x"], "imageData must be a string or null, got a list"),
        ("imageHeight", "40", "imageHeight must be an integer or null, got a string"),
        ("imageWidth", -3, "imageWidth must be a positive integer, got -3"),
    ],
)
def test_malformed_file_fields_name_the_field(tmp_path, field, value, reason):
    path = write_json(tmp_path / "bad.json", [], **{field: value})
    with pytest.raises(LabelMeError, match=reason):
        read_annotation(path)


# --- fuzz: mutated LabelMe files end in the documented per-file error -------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=8,
)
TOP_KEYS = ["version", "flags", "shapes", "imagePath", "imageData", "imageHeight",
            "imageWidth"]
SHAPE_KEYS = ["label", "points", "group_id", "shape_type", "flags", "description", "mask"]


@st.composite
def mutated_documents(draw_):
    """A valid two-shape LabelMe document with random keys removed, values
    swapped for random JSON, out-of-range numbers and extra junk shapes."""
    doc = {
        "version": "5.5.0", "flags": {}, "imagePath": "img.png", "imageData": None,
        "imageHeight": 20, "imageWidth": 30,
        "shapes": [shape("a", [[1, 1], [10, 2], [5, 9]]),
                   shape("b", [[2, 2], [8, 8]], "rectangle", group_id=1)],
    }
    for _ in range(draw_(st.integers(1, 4))):
        target = draw_(st.sampled_from(["top", "shape", "point", "extra"]))
        if target == "top":
            key = draw_(st.sampled_from(TOP_KEYS))
            if draw_(st.booleans()):
                doc.pop(key, None)
            else:
                doc[key] = draw_(JSON_VALUES)
        elif target == "extra" and isinstance(doc.get("shapes"), list):
            doc["shapes"].append(draw_(JSON_VALUES))
        elif isinstance(doc.get("shapes"), list) and doc["shapes"]:
            item = doc["shapes"][draw_(st.integers(0, len(doc["shapes"]) - 1))]
            if not isinstance(item, dict):
                continue
            if target == "point" and isinstance(item.get("points"), list) and item["points"]:
                item["points"][0] = draw_(st.sampled_from([
                    [1e308, 2], [float("nan"), 1], [-5, 3], ["1", 2], [1], [1, 2, 3], None]))
            else:
                key = draw_(st.sampled_from(SHAPE_KEYS))
                if draw_(st.booleans()):
                    item.pop(key, None)
                else:
                    item[key] = draw_(JSON_VALUES)
    return doc


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    save_png(folder / "img.png", np.full((20, 30, 3), 90, np.uint8))
    return folder


@settings(max_examples=300, deadline=None)
@given(document=mutated_documents())
def test_mutated_files_end_in_the_per_file_error_and_nothing_else(fuzz_folder, document):
    from keras_unet.data.convert import labelme_to_masks

    path = fuzz_folder / "doc.json"
    path.write_text(json.dumps(document))
    summary = labelme_to_masks(fuzz_folder, fuzz_folder.parent / (fuzz_folder.name + "_out"),
                               labels=["_background_", "a", "b"], workers=1, force=True)
    assert summary.converted + len(summary.errors) == 1
    for file, reason in summary.errors:
        assert file == str(path) and reason


def test_missing_image_names_the_path(tmp_path):
    path = write_json(tmp_path / "a.json", [], image_path="gone.jpg")
    with pytest.raises(LabelMeError, match="image not found: imagePath 'gone.jpg'"):
        load_image(read_annotation(path))


def test_size_mismatch_is_an_error(tmp_path):
    save_png(tmp_path / "img.png", np.zeros((30, 60, 3), np.uint8))
    path = write_json(tmp_path / "a.json", [], size=(40, 60))
    with pytest.raises(LabelMeError, match="size mismatch.*40x60.*30x60"):
        load_image(read_annotation(path))


# --- labelme's own examples against labelme's converter ---------------------


def labelme_reference(json_path, names):
    """Class and instance masks as labelme2voc.py computes them."""
    import labelme

    label_file = labelme.LabelFile(filename=str(json_path))
    image = labelme.utils.img_data_to_arr(label_file.imageData)
    ids = {"__ignore__": -1, **{n: i for i, n in enumerate(names)}}
    classes, instances = labelme.utils.shapes_to_label(image.shape, label_file.shapes, ids)
    return np.where(classes == -1, 255, classes), instances, image


def same_partition(a, b, where):
    """Whether two instance maps split the pixels `where` into the same groups."""
    pairs = np.unique(np.stack([a[where], b[where]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def example_files(shared_datasets):
    return sorted((shared_datasets / "labelme_examples").glob("*/*.json"))


def test_every_labelme_example_matches_labelmes_converter(shared_datasets):
    pytest.importorskip("labelme")
    files = example_files(shared_datasets)
    assert len(files) >= 15
    for path in files:
        names = read_labels(path.parent / "labels.txt")
        annotation = read_annotation(path)
        image = load_image(annotation)
        classes, instances = rasterize(annotation.shapes, *image.shape[:2], label_ids(names))
        ref_classes, ref_instances, ref_image = labelme_reference(path, names)
        np.testing.assert_array_equal(image, ref_image[..., :3], err_msg=str(path))
        differ = classes != ref_classes
        if path.name == "primitives.json":
            # Our linestrip has round joints (labelme draws none): differences
            # may only lie within half a line width of the strip's inner vertex.
            (strip,) = [s for s in annotation.shapes if s.shape_type == "linestrip"]
            yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
            vx, vy = strip.points[1]
            near_joint = (xx - vx) ** 2 + (yy - vy) ** 2 <= 5**2
            assert differ.any() and not (differ & ~near_joint).any()
        else:
            assert not differ.any(), f"{path}: {differ.sum()} pixels differ"
        things = (classes != 0) & (classes != 255) & ~differ
        assert same_partition(instances, ref_instances, things), path
