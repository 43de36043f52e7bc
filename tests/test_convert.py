"""Tests for keras_unet.data.convert and the labelme2masks / masks2labelme commands."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from keras_unet.cli import main
from keras_unet.data.convert import labelme_to_masks, mask_to_shapes, masks_to_labelme
from keras_unet.data.labelme import LabelMeError, Shape, rasterize
from keras_unet.data.labels import label_ids


def write_file(folder, name, shapes, size=(30, 40), image=True, image_name=None):
    image_name = image_name or f"{name}.png"
    if image:
        PIL.Image.fromarray(np.full((*size, 3), 100, np.uint8)).save(folder / image_name)
    doc = {"version": "5.5.0", "shapes": shapes, "imagePath": image_name,
           "imageData": None, "imageHeight": size[0], "imageWidth": size[1]}
    (folder / f"{name}.json").write_text(json.dumps(doc))


def box(label, x0, y0, x1, y1, group_id=None):
    return {"label": label, "points": [[x0, y0], [x1, y1]], "shape_type": "rectangle",
            "group_id": group_id}


@pytest.fixture
def good_folder(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    write_file(src, "one", [box("cat", 0, 0, 9, 9), box("dog", 20, 0, 29, 9)])
    write_file(src / "sub", "one", [box("dog", 0, 0, 4, 4)])  # same stem, other folder
    return src


def read_png(path):
    return np.asarray(PIL.Image.open(path))


def test_converts_a_folder_tree_with_one_label_map(good_folder, tmp_path):
    out = tmp_path / "out"
    summary = labelme_to_masks(good_folder, out, instances=True, overlays=True, workers=1)
    assert summary.converted == 2 and not summary.errors
    assert (out / "labels.txt").read_text() == "__ignore__\n_background_\ncat\ndog\n"
    mask = read_png(out / "masks" / "one.png")
    assert (mask == 1).sum() == 100 and (mask == 2).sum() == 100
    assert (read_png(out / "masks" / "sub" / "one.png") == 2).sum() == 25
    assert read_png(out / "images" / "one.png").shape == (30, 40, 3)
    assert set(np.unique(read_png(out / "instances" / "one.png"))) == {0, 1, 2}
    assert (out / "overlays" / "sub" / "one.jpg").is_file()
    assert summary.shapes["rectangle"] == 3 and summary.pixels["dog"] == 125


def _source_image(kind, pixels):
    """A source image of `kind` and the upright RGB array it must convert to."""
    grey = pixels[..., 0]
    if kind == "RGB png":
        return PIL.Image.fromarray(pixels), pixels
    if kind == "L png":
        return PIL.Image.fromarray(grey), np.repeat(grey[..., None], 3, axis=-1)
    if kind == "RGBA png":
        alpha = np.full(grey.shape + (1,), 7, np.uint8)
        return PIL.Image.fromarray(np.concatenate([pixels, alpha], -1)), pixels
    if kind == "P png":
        table = np.random.default_rng(1).integers(0, 256, (256, 3), dtype=np.uint8)
        image = PIL.Image.fromarray(grey, mode="P")
        image.putpalette(table.ravel().tolist())
        return image, table[grey]
    if kind == "16-bit png":
        image = PIL.Image.fromarray(grey.astype(np.uint16) * 257)
        return image, np.repeat(grey[..., None], 3, axis=-1)
    if kind == "EXIF-rotated png":  # orientation 6: shown turned 90 degrees clockwise
        exif = PIL.Image.Exif()
        exif[0x0112] = 6
        image = PIL.Image.fromarray(pixels)
        image.info["exif"] = exif.tobytes()
        return image, np.rot90(pixels, k=-1)
    raise ValueError(kind)


COPIED = ["RGB png", "L png"]


@pytest.mark.parametrize("kind", COPIED + ["RGBA png", "P png", "16-bit png",
                                          "EXIF-rotated png"])
def test_images_are_upright_and_lossless_and_copied_only_when_unchanged(kind, tmp_path):
    from keras_unet.data.labelme import to_rgb

    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    source, expected = _source_image(kind, pixels)
    src = tmp_path / "src"
    src.mkdir()
    params = {"exif": source.info["exif"]} if "exif" in source.info else {}
    source.save(src / "a.png", **params)
    doc = {"version": "5.5.0", "shapes": [box("cat", 0, 0, 3, 3)], "imagePath": "a.png",
           "imageData": None, "imageHeight": expected.shape[0],
           "imageWidth": expected.shape[1]}
    (src / "a.json").write_text(json.dumps(doc))

    summary = labelme_to_masks(src, tmp_path / "out", workers=1)
    assert summary.converted == 1 and not summary.errors
    written = tmp_path / "out" / "images" / "a.png"
    np.testing.assert_array_equal(to_rgb(PIL.Image.open(written)), expected)
    assert read_png(tmp_path / "out" / "masks" / "a.png").shape == expected.shape[:2]
    copied = written.read_bytes() == (src / "a.png").read_bytes()
    assert copied == (kind in COPIED)
    if not copied:
        assert PIL.Image.open(written).mode == "RGB"


def test_a_jpeg_source_becomes_a_png_of_its_decoded_pixels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_file(src, "a", [box("cat", 0, 0, 3, 3)], image_name="a.jpg")
    summary = labelme_to_masks(src, tmp_path / "out", workers=1)
    assert summary.converted == 1 and not summary.errors
    written = PIL.Image.open(tmp_path / "out" / "images" / "a.png")
    assert written.format == "PNG" and written.mode == "RGB"
    expected = np.asarray(PIL.Image.open(src / "a.jpg").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(written), expected)


def test_a_truncated_png_is_an_error_not_a_copy(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_file(src, "a", [box("cat", 0, 0, 3, 3)])
    data = (src / "a.png").read_bytes()
    (src / "a.png").write_bytes(data[: len(data) // 2])
    summary = labelme_to_masks(src, tmp_path / "out", workers=1)
    assert summary.converted == 0
    assert "cannot decode image" in summary.errors[0][1]
    assert not (tmp_path / "out" / "images" / "a.png").exists()


def test_parallel_conversion_equals_serial(good_folder, tmp_path):
    labelme_to_masks(good_folder, tmp_path / "a", workers=1)
    labelme_to_masks(good_folder, tmp_path / "b", workers=2)
    for name in ("one.png", "sub/one.png"):
        np.testing.assert_array_equal(read_png(tmp_path / "a/masks" / name),
                                      read_png(tmp_path / "b/masks" / name))


def test_rerun_skips_up_to_date_outputs_unless_forced(good_folder, tmp_path):
    out = tmp_path / "out"
    first = labelme_to_masks(good_folder, out, workers=1).format()
    assert "shapes: rectangle 3" in first and "(converted files)" not in first
    rerun = labelme_to_masks(good_folder, out, workers=1)
    assert rerun.skipped == 2
    # Nothing was converted: the report says why, not that the data is empty.
    assert "shapes (converted files): none converted, the files were up to date" in (
        rerun.format())
    assert labelme_to_masks(good_folder, out, workers=1, force=True).converted == 2
    later = os.stat(out / "masks" / "one.png").st_mtime + 10
    os.utime(good_folder / "one.json", (later, later))  # annotation edited
    summary = labelme_to_masks(good_folder, out, workers=1)
    assert (summary.converted, summary.skipped) == (1, 1)


def test_sources_are_never_modified(good_folder, tmp_path):
    before = {p: p.read_bytes() for p in good_folder.rglob("*") if p.is_file()}
    labelme_to_masks(good_folder, tmp_path / "out", overlays=True, workers=1)
    assert before == {p: p.read_bytes() for p in good_folder.rglob("*") if p.is_file()}


def test_no_temporary_files_are_left_behind(good_folder, tmp_path):
    labelme_to_masks(good_folder, tmp_path / "out", workers=2)
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]


@pytest.fixture
def mixed_folder(good_folder):
    (good_folder / "broken.json").write_text("{oops")
    write_file(good_folder, "noimage", [box("cat", 0, 0, 5, 5)], image=False)
    write_file(good_folder, "ellipse", [{"label": "cat", "points": [[0, 0], [5, 5]],
                                         "shape_type": "ellipse"}])
    write_file(good_folder, "stranger", [box("zebra", 0, 0, 5, 5)])
    write_file(good_folder, "sizes", [box("cat", 0, 0, 5, 5)], image=False, image_name="s.png")
    PIL.Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(good_folder / "s.png")
    write_file(good_folder, "thin", [{"label": "cat", "points": [[0, 0], [5, 5]]}])
    return good_folder


def test_bad_files_are_reported_and_good_ones_converted(mixed_folder, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\ncat\ndog\n")
    summary = labelme_to_masks(mixed_folder, tmp_path / "out", labels=labels, workers=2)
    reasons = {os.path.basename(path): reason for path, reason in summary.errors}
    assert "invalid JSON" in reasons["broken.json"]
    assert "image not found" in reasons["noimage.json"]
    assert "unknown shape_type 'ellipse'" in reasons["ellipse.json"]
    assert "unknown label 'zebra'" in reasons["stranger.json"]
    assert "size mismatch" in reasons["sizes.json"]
    assert "needs >= 3 points" in reasons["thin.json"]
    assert summary.converted == 2
    assert (tmp_path / "out" / "masks" / "sub" / "one.png").is_file()


def test_cli_exits_non_zero_and_names_each_bad_file(mixed_folder, tmp_path, capsys):
    code = main(["labelme2masks", str(mixed_folder), str(tmp_path / "out"), "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 1
    for name in ("broken.json", "noimage.json", "ellipse.json", "sizes.json", "thin.json"):
        assert f"{name}: " in out
    assert "converted: 3" in out  # zebra is a class when no label map is given


@pytest.mark.parametrize("workers", ["1", "2"])
def test_malformed_fields_are_per_file_errors_and_the_rest_converts(good_folder, tmp_path,
                                                                   capsys, workers):
    write_file(good_folder, "nullabel", [{"label": None, "points": [[0, 0], [5, 5]],
                                          "shape_type": "rectangle"}])
    write_file(good_folder, "newline", [box("cat\nhat", 0, 0, 5, 5)])
    write_file(good_folder, "listtype", [{"label": "cat", "points": [[0, 0], [5, 5]],
                                          "shape_type": ["rectangle"]}])
    write_file(good_folder, "listgroup", [box("cat", 0, 0, 5, 5, group_id=[1])])
    doc = json.loads((good_folder / "one.json").read_text())
    (good_folder / "intpath.json").write_text(json.dumps({**doc, "imagePath": 5}))
    (good_folder / "listdata.json").write_text(json.dumps({**doc, "imageData": [1]}))
    code = main(["labelme2masks", str(good_folder), str(tmp_path / "out"),
                 "--workers", workers])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.out + captured.err
    for name, reason in [("nullabel", "label must be a string, got null"),
                         ("newline", "holds a line break"),
                         ("listtype", "shape_type must be a string"),
                         ("listgroup", "group_id must be an integer"),
                         ("intpath", "imagePath must be a string"),
                         ("listdata", "imageData must be a string")]:
        assert f"{name}.json: " in captured.out and reason in captured.out, name
    assert "converted: 2" in captured.out
    labels = (tmp_path / "out" / "labels.txt").read_text().splitlines()
    assert labels == ["__ignore__", "_background_", "cat", "dog"]  # no 'None', no 'cat\nhat'


@pytest.mark.parametrize("case, message", [
    ("missing_input", "input folder not found"),
    ("empty_input", "no LabelMe .json files in this folder or below it"),
    ("input_is_a_file", "not a folder"),
    ("missing_labels", "labels file not found"),
    ("output_is_a_file", "the output path is a file, not a folder"),
    ("read_only_output", "cannot write to the output folder"),
])
def test_cli_input_and_output_mistakes_are_one_clear_line(good_folder, tmp_path, capsys,
                                                         case, message):
    source, out, extra = good_folder, tmp_path / "out", []
    if case == "missing_input":
        source = tmp_path / "nowhere"
    elif case == "empty_input":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "input_is_a_file":
        source = good_folder / "one.json"
    elif case == "missing_labels":
        extra = ["--labels", str(tmp_path / "labels.txt")]
    elif case == "output_is_a_file":
        out.write_text("a file")
    elif case == "read_only_output":
        if os.geteuid() == 0:  # root writes anywhere on disk: use a read-only file system
            out = Path("/proc/self/keras-unet-out")
        else:
            out.mkdir()
            out.chmod(0o500)
    code = main(["labelme2masks", str(source), str(out), *extra])
    captured = capsys.readouterr()
    assert code == 1
    assert message in captured.err and "Traceback" not in captured.err
    assert str(source if "input" in case else out).split("/")[-1] in captured.err
    if case == "empty_input":
        assert not out.exists()  # nothing written for nothing converted


def test_more_classes_than_masks_hold_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    write_file(src, "many", [box(f"c{i}", 0, 0, 2, 2) for i in range(255)])
    code = main(["labelme2masks", str(src), str(tmp_path / "out")])
    assert code == 1
    assert "255 classes do not fit in 8-bit masks" in capsys.readouterr().err


WORKERS_OF_A_KILLED_PARENT = """
import os, sys, time
from keras_unet.data.convert import _runner

def stall(i):
    time.sleep(60)
    return i

with _runner(2) as run:
    pool = run.keywords["pool"]
    pids = {pool.submit(os.getpid).result() for _ in range(20)}
    print(" ".join(map(str, sorted(pids))), flush=True)
    list(run(stall, [(i,) for i in range(4)]))
"""


def test_worker_processes_end_when_the_parent_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", WORKERS_OF_A_KILLED_PARENT],
                              stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert workers and parent.pid not in workers
    time.sleep(1)  # the workers are busy now
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _running(pid)]
    assert not alive, f"workers {alive} outlived their killed parent"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_cli_strict_stops_at_the_first_bad_file(mixed_folder, tmp_path, capsys):
    code = main(["labelme2masks", str(mixed_folder), str(tmp_path / "out"), "--strict"])
    assert code == 1
    assert "error: " in capsys.readouterr().err
    with pytest.raises(LabelMeError):
        labelme_to_masks(mixed_folder, tmp_path / "out2", strict=True, workers=1)


def test_unknown_labels_are_all_listed_with_their_files(good_folder, tmp_path, caplog):
    write_file(good_folder, "z1", [box("zebra", 0, 0, 5, 5), box("yak", 0, 0, 2, 2)])
    write_file(good_folder, "z2", [box("zebra", 0, 0, 5, 5)])
    summary = labelme_to_masks(good_folder, tmp_path / "out", labels=["cat", "dog"], workers=1)
    assert len(summary.errors) == 2
    log = caplog.text
    assert "'zebra' in" in log and "z1.json" in log and "z2.json" in log and "'yak' in" in log


def test_label_map_change_rewrites_every_file(good_folder, tmp_path):
    out = tmp_path / "out"
    labelme_to_masks(good_folder, out, workers=1)
    summary = labelme_to_masks(good_folder, out, labels=["dog", "cat"], workers=1)
    assert summary.converted == 2
    assert (read_png(out / "masks" / "sub" / "one.png") == 1).sum() == 25


def test_examples_convert_through_the_cli(shared_datasets, tmp_path):
    code = main(["labelme2masks", str(shared_datasets / "labelme_examples"),
                 str(tmp_path / "out"), "--instances", "--workers", "2"])
    assert code == 0
    assert len(list((tmp_path / "out" / "masks").rglob("*.png"))) == 18


# --- masks -> LabelMe -------------------------------------------------------


def redraw(shapes, shape_hw, names):
    parsed = [Shape(s["label"], "polygon", [tuple(p) for p in s["points"]], s["group_id"])
              for s in shapes]
    return rasterize(parsed, *shape_hw, label_ids(names))


def test_mask_with_holes_islands_and_single_pixels_round_trips_exactly():
    names = ["_background_", "a", "b"]
    mask = np.zeros((40, 50), np.uint8)
    mask[5:35, 5:45] = 1
    mask[10:30, 10:30] = 0      # a hole ...
    mask[15:20, 15:20] = 1      # ... with an island of the same class
    mask[22:26, 22:26] = 2      # and one of another class
    mask[2, 2] = 2              # single pixel
    mask[0:3, 47] = 255         # ignore
    classes, _ = redraw(mask_to_shapes(mask, names), mask.shape, names)
    np.testing.assert_array_equal(classes, mask)


def test_instances_round_trip_with_group_ids():
    names = ["_background_", "cell"]
    instances = np.zeros((30, 30), np.uint16)
    instances[2:10, 2:10] = 1
    instances[10:20, 2:10] = 2          # touches instance 1
    instances[20:25, 20:25] = 3
    instances[26:28, 20:22] = 3         # second part of instance 3
    classes = (instances > 0).astype(np.uint8)
    shapes = mask_to_shapes(classes, names, instances)
    assert {s["group_id"] for s in shapes} == {1, 2, 3}
    got_classes, got_instances = redraw(shapes, classes.shape, names)
    np.testing.assert_array_equal(got_classes, classes)
    for k in (1, 2, 3):
        assert len(np.unique(got_instances[instances == k])) == 1


def test_masks2labelme_round_trip_on_real_nuclei(shared_datasets, tmp_path):
    src = shared_datasets / "dsb2018_nuclei"
    names = sorted(p.name for p in (src / "masks").glob("*.png"))[:5]
    for sub in ("images", "masks", "labels"):
        (tmp_path / sub).mkdir()
        for name in names:
            shutil.copy(src / sub / name, tmp_path / sub / name)
    (tmp_path / "labels.txt").write_text("_background_\nnucleus\n")
    masks_to_labelme(tmp_path / "images", tmp_path / "masks", tmp_path / "lm",
                     labels=tmp_path / "labels.txt", instances_dir=tmp_path / "labels",
                     foreground_value=255)
    summary = labelme_to_masks(tmp_path / "lm", tmp_path / "out", instances=True, workers=1)
    assert summary.converted == 5
    for name in names:
        expected = (read_png(src / "masks" / name) == 255).astype(np.uint8)
        np.testing.assert_array_equal(read_png(tmp_path / "out/masks" / name), expected)


def test_the_bundled_sample_converts_back_to_its_source_masks(shared_datasets, nuclei_dataset):
    """datasets/nuclei is DSB2018 as LabelMe polygons: every mask comes back exactly."""
    src = shared_datasets / "dsb2018_nuclei"
    names = sorted(p.name for p in (nuclei_dataset / "masks").glob("*.png"))
    assert len(names) == 83
    for name in names:
        expected = read_png(src / "masks" / name) == 255
        np.testing.assert_array_equal(read_png(nuclei_dataset / "masks" / name), expected,
                                      err_msg=name)
        # The same objects (numbering aside): each source nucleus is one sample id.
        source_ids = read_png(src / "labels" / name).astype(np.int64)
        sample_ids = read_png(nuclei_dataset / "instances" / name).astype(np.int64)
        pairs = np.unique(np.stack([source_ids.ravel(), sample_ids.ravel()]), axis=1)
        assert len(pairs[0]) == len(np.unique(pairs[0])) == len(np.unique(pairs[1])), name


def test_a_rerun_removes_what_a_killed_conversion_left_and_training_reads_no_leftover(
        good_folder, tmp_path):
    import subprocess
    import sys

    from keras_unet.data.pairs import load_dataset

    out = tmp_path / "out"
    labelme_to_masks(good_folder, out, workers=1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # a finished pid
    stale = out / "images" / f".one.{dead}-0123abcd.tmp.png"
    live = out / "images" / f".one.{os.getpid()}-89abcdef.tmp.png"  # a writer still running
    for path in (stale, live):
        path.write_bytes(b"half a PNG")
    assert len(load_dataset(out).images) == 2  # leftovers are no training pairs
    labelme_to_masks(good_folder, out, workers=1)
    assert not stale.exists() and live.exists()
