"""Argument types of the command line: each refuses a bad value with a
message that says what is expected (argparse names the flag)."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _integer(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _integer(text, 0)


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def object_size(text: str) -> float | str | None:
    """`--object-size`: `auto`, `off` (`None`) or a diameter in pixels > 0."""
    if text in ("auto", "off"):
        return None if text == "off" else text
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected auto, off or a diameter in pixels, got {text}") from None


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1] (NaN refused)."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], got {text}")
    return value


def overlap(text: str) -> float:
    """A tile overlap in [0, 0.9]."""
    from keras_unet.inference.predict import MAX_OVERLAP

    value = _number(text)
    if not 0 <= value <= MAX_OVERLAP:
        raise argparse.ArgumentTypeError(
            f"must be in [0, {MAX_OVERLAP}] (a fraction of the tile; 0.5 is the usual), "
            f"got {text}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def size(text: str) -> tuple[int, int]:
    """`256` or `256x320` as `(height, width)`, both >= 1."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    try:
        height, width = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"expected SIZE or HxW, got {text!r}") from None
    if len(parts) != 2 or height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"expected positive SIZE or HxW, got {text!r}")
    return height, width
