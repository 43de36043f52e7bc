"""Tests for keras_unet.files: atomic writes."""

import os
import stat

import pytest

from keras_unet import files


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
