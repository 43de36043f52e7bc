"""Safe file output: every file is written whole or not at all."""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import PIL.Image

# The temporary name `atomic_write` gives a file: `.<stem>.<pid>-<token>.tmp<suffix>`.
TEMPORARY = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp(\.[^.]*)?$")


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path` is a temporary file of `atomic_write` (never a user's file)."""
    return bool(TEMPORARY.match(Path(path).name))


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Deletes the temporary files that killed writers left below `folder`.

    A temporary file whose writing process still runs is kept.

    Args:
        folder: The folder searched (recursively); it need not exist.

    Returns:
        How many files were deleted.
    """
    removed = 0
    for path in Path(folder).rglob(".*.tmp*") if Path(folder).is_dir() else []:
        match = TEMPORARY.match(path.name)
        if match and path.is_file() and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], None], *, durable: bool = False
) -> Path:
    """Writes a file through a temporary file in the same folder, then renames.

    An interrupted write (an exception, or the process killed) leaves the
    previous file (or none), never a half-written one. The temporary file
    keeps the destination's suffix (Keras wants `.keras`). The file gets the
    usual permissions (umask), like any file the user creates.

    Args:
        path: Destination file.
        write: Called with the temporary path; must write the file there.
        durable: Also flush the file to disk before the rename, so that it
            survives a power loss too (for checkpoints; slower).

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of this process and a random token: no other writer uses it.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        write(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None or str(err.filename) == str(tmp):  # name what was being written
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync(path.parent)
    return path


def _fsync(path: Path) -> None:
    """Flushes a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # folders cannot be synced on some systems
        pass
    finally:
        os.close(fd)


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Makes `path` a second name of the file `source` (a copy where the file
    system has no hard links), replacing `path` atomically.

    Args:
        source: An existing file.
        path: The new name.

    Returns:
        The new path.
    """
    import shutil

    path = Path(path)
    if path.exists() and os.path.samefile(source, path):
        return path  # already that file (renaming a link onto itself would do nothing)

    def link(tmp: Path) -> None:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    return atomic_write(path, link)


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Creates `folder` if needed and checks that files can be written in it.

    Raises:
        OSError: With a message naming the folder: it is a file, or it
            cannot be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(20, "the output path is a file, not a folder", str(folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise type(err)(err.errno, f"cannot write to the output folder ({err.strerror})",
                        str(folder)) from None
    return folder


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically writes UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def csv_text(rows: list[dict], empty: tuple[str, ...] = ()) -> str:
    """Rows as CSV text, the columns in order of first appearance (a row
    without a column leaves it empty); the header `empty` when there are no
    rows."""
    columns = list(dict.fromkeys(key for row in rows for key in row)) or list(empty)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | os.PathLike, rows: list[dict], empty: tuple[str, ...] = ()) -> Path:
    """Atomically writes rows as CSV (see `csv_text`)."""
    return write_text(path, csv_text(rows, empty))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically writes bytes."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def save_image(path: str | os.PathLike, image: PIL.Image.Image, **params) -> Path:
    """Atomically saves a PIL image; the format follows the file suffix."""
    fmt = PIL.Image.registered_extensions()[Path(path).suffix.lower()]
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **params))
