"""Quiet output: TensorFlow's and LiteRT's native messages, silenced on request.

TensorFlow, its converter and LiteRT print from C++ straight to the process's
standard output and error (oneDNN notices, "Could not find cuda drivers",
absl warnings, the converter's quantization summary, "Created TensorFlow Lite
XNNPACK delegate"), which Python's logging cannot filter. Inside
`native_output_silenced()` those file descriptors point to `/dev/null`, when
`set_quiet(True)` was called (the command line does, unless `--verbose`).
Errors still reach the user: they come back as Python exceptions.
"""

from __future__ import annotations

import contextlib
import os
import sys

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turns the silencing of native output on or off for this process."""
    global _quiet
    _quiet = quiet


@contextlib.contextmanager
def native_output_silenced():
    """Sends file descriptors 1 and 2 to `/dev/null` while the block runs
    (only after `set_quiet(True)`)."""
    if not _quiet:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow (and Keras) with its start-up notices silenced."""
    with native_output_silenced():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
