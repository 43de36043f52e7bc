"""Pre-trained models bundled with keras-unet, usable by name.

A model trained on many images is a better start than random weights: on
the bundled sample, a U-Net trained from scratch for 6 minutes on its 54
training images ties the Otsu baselines, while the bundled nucleus model,
fine-tuned for 2 minutes, beats them (see docs/guides/models.md,
"Pre-trained models"). Wherever a command reads a model, a bundled model's name works
in place of a path:

    keras-unet train --data my_nuclei --init-from nuclei_dsb2018
    keras-unet predict nuclei_dsb2018 images/ out/ --labelme

Each model is a folder of this package: `model.keras`, `labels.txt` and
`card.json` (what it was trained on and how, its scores, and the SHA-256
of `model.keras`). A file or folder of the same name in the working
directory takes precedence over a bundled name.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from keras_unet.errors import KerasUnetError

PRETRAINED_DIR = Path(__file__).resolve().parent
log = logging.getLogger(__name__)


class PretrainedError(KerasUnetError, ValueError):
    """An unknown bundled model name."""


def available() -> list[str]:
    """The names of the bundled models.

    Returns:
        Sorted folder names of this package that hold a `card.json`.
    """
    return sorted(p.parent.name for p in PRETRAINED_DIR.glob("*/card.json"))


def model_path(name: str) -> Path:
    """The `.keras` file of a bundled model.

    Args:
        name: A name from `available()`.

    Returns:
        The path of its `model.keras`.

    Raises:
        PretrainedError: If no bundled model has that name.
    """
    if name not in available():
        raise PretrainedError(f"{name!r} is not a bundled model; bundled: "
                              f"{', '.join(available()) or 'none'}")
    return PRETRAINED_DIR / name / "model.keras"


def model_card(name: str) -> dict:
    """Provenance and scores of a bundled model (its `card.json`).

    Args:
        name: A name from `available()`.

    Returns:
        The card as a dict.

    Raises:
        PretrainedError: If no bundled model has that name.
    """
    card = model_path(name).with_name("card.json")
    return json.loads(card.read_text(encoding="utf-8"))


def is_bundled_name(model: str | os.PathLike, base: str | os.PathLike = ".") -> bool:
    """Whether `model` names a bundled model rather than an existing path.

    Args:
        model: A path, or the name of a bundled model.
        base: The folder a relative path starts from.
    """
    return str(model) in available() and not (Path(base) / model).exists()


def resolve(model: str | os.PathLike) -> Path:
    """A model path, with bundled names replaced by their `.keras` file.

    Args:
        model: A path, or the name of a bundled model.

    Returns:
        The path to read the model from.
    """
    if str(model) in available() and Path(model).exists():
        log.warning("%s: a file or folder of this name here is read, not the bundled model of "
                    "that name (rename it, or run from another folder, to use the bundled one)",
                    model)
    return model_path(str(model)) if is_bundled_name(model) else Path(model)
