"""Tests for keras_unet.files: atomic writes and the mask/instance PNGs."""

import os
import stat

import numpy as np
import PIL.Image
import pytest

from keras_unet import files
from keras_unet.labels import class_color


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    files.write_text(target, "old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_written_files_get_the_permissions_of_the_umask(tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")  # what any program writing a file gets
    ours = files.write_bytes(tmp_path / "sub" / "ours.bin", b"x")
    assert ours.read_bytes() == b"x"
    assert stat.S_IMODE(os.stat(ours).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_mask_png_keeps_class_ids_with_the_class_palette(tmp_path):
    mask = np.array([[0, 1, 2], [255, 7, 1]], np.uint8)
    path = files.save_mask(tmp_path / "m.png", mask)
    with PIL.Image.open(path) as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), mask)
        rgb = np.asarray(image.convert("RGB"))
    # Red is the class id (decoders that expand palettes keep the id);
    # green and blue are the class colour's, ignore is white.
    for (y, x) in [(0, 1), (0, 2), (1, 1)]:
        assert tuple(rgb[y, x]) == (mask[y, x], *class_color(int(mask[y, x]))[1:])
    assert tuple(rgb[1, 0]) == (255, 255, 255)


def test_instance_png_keeps_ids_above_255(tmp_path):
    instances = np.array([[0, 1], [300, 65535]], np.uint16)
    path = files.save_instances(tmp_path / "i.png", instances)
    with PIL.Image.open(path) as image:
        np.testing.assert_array_equal(np.asarray(image).astype(np.uint16), instances)


def test_linking_a_file_again_leaves_no_temporary_behind(tmp_path):
    """Renaming a hard link onto the same file does nothing (POSIX): the
    temporary name would stay."""
    source = files.write_bytes(tmp_path / "a.bin", b"x")
    files.atomic_link(source, tmp_path / "b.bin")
    files.atomic_link(source, tmp_path / "b.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]
    assert (tmp_path / "b.bin").read_bytes() == b"x"


def test_a_writable_folder_check_names_a_file_in_the_way(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(NotADirectoryError, match="the output path is a file"):
        files.check_writable_folder(tmp_path / "out")
    assert files.check_writable_folder(tmp_path / "new" / "deep").is_dir()


def test_a_write_that_fails_for_lack_of_room_names_the_file(tmp_path):
    import errno

    def too_large(tmp):
        tmp.write_text("half")
        raise OSError(errno.EFBIG, "File too large")  # as a full disk says it: no name

    with pytest.raises(OSError, match="File too large") as raised:
        files.atomic_write(tmp_path / "masks" / "a.png", too_large)
    assert raised.value.filename == str(tmp_path / "masks" / "a.png")
    assert not list((tmp_path / "masks").iterdir())
