"""Pre-annotation: a model's predictions as LabelMe files a person corrects.

The loop: annotate a few images in LabelMe, train, predict the others with
`keras-unet predict MODEL IMAGES OUT --labelme`, correct them in LabelMe,
then train again on the grown dataset (`keras-unet train --init-from RUN`).

A predicted file is a valid LabelMe file (one polygon per connected region
per class, holes as later `_background_` polygons, one `group_id` per
object for instance models) that carries:

- the image-level flag `predicted` (a check box in LabelMe);
- a top-level `keras_unet` entry (LabelMe keeps it when it saves): the
  model, the time, the mean and lowest probability of the file's shapes, and
  a fingerprint of the shapes as they were predicted;
- in each shape's `description`, its mean probability (`p=0.934`), so a
  person can start with the least certain shapes.

A file counts as a prediction only while it is flagged and its shapes are
unchanged. Once a person edits a shape (or unticks `predicted`) and saves,
the file is theirs: `predict --labelme` never writes over it, and
`--overwrite-predictions` replaces only files that are still predictions.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_unet import files
from keras_unet.data.convert import mask_to_shapes
from keras_unet.data.labelme import labelme_document

# Polygon simplification default, in pixels: the largest tolerance that
# keeps >= 99.5 % of the pixels when the polygons are drawn back (measured
# by benchmarks/bench_preannotate.py on predicted nuclei; see docs/benchmarks/speed.md).
DEFAULT_EPSILON = 0.75
PREDICTED_FLAG = "predicted"
KEY = "keras_unet"


def shapes_fingerprint(shapes: list[dict]) -> str:
    """A fingerprint of what the shapes draw (label, type, group, points)."""
    summary = [
        [s.get("label"), s.get("shape_type") or "polygon", s.get("group_id"),
         [[round(float(x), 2), round(float(y), 2)] for x, y in s.get("points") or []]]
        for s in shapes
    ]
    return hashlib.sha256(json.dumps(summary).encode()).hexdigest()


def document_fingerprint(document: dict) -> str:
    """A fingerprint of everything in a LabelMe document but keras-unet's own
    entry: shapes, descriptions, flags, image path and data."""
    rest = {key: value for key, value in document.items() if key != KEY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def is_prediction(document: dict) -> bool:
    """Whether a LabelMe document is an untouched keras-unet prediction.

    Any change by a person (a description, a flag, a point) makes it an
    annotation. Files written before the whole-document fingerprint are
    judged by their shapes.
    """
    entry = document.get(KEY)
    if not isinstance(entry, dict) or not (document.get("flags") or {}).get(PREDICTED_FLAG):
        return False
    if "document_sha256" in entry:
        return entry["document_sha256"] == document_fingerprint(document)
    return entry.get("shapes_sha256") == shapes_fingerprint(document.get("shapes") or [])


@dataclass
class LabelMeOutput:
    """How `predict` writes LabelMe files.

    Attributes:
        epsilon: Polygon simplification in pixels (`None`: `DEFAULT_EPSILON`;
            0 keeps every pixel corner).
        embed_images: Store the image in the JSON (`imageData`).
        overwrite_predictions: Replace earlier predictions (never a person's
            annotation).
    """

    epsilon: float | None = None
    embed_images: bool = False
    overwrite_predictions: bool = False

    def write(
        self,
        json_path: str | os.PathLike,
        image_path: str | os.PathLike,
        classes: np.ndarray,
        names: list[str],
        *,
        objects: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
        model: str = "",
    ) -> str | None:
        """Writes the LabelMe file of one predicted image, unless it must not.

        Args:
            json_path: The `.json` file to write.
            image_path: The image (its path is stored relative to the JSON).
            classes: `(H, W)` predicted class ids.
            names: Class names by id.
            objects: `(H, W)` object ids of an instance model (`group_id`s).
            confidence: `(H, W)` probability of each pixel's class.
            model: The model file, recorded in the file.

        Returns:
            `None` when written, else why the file was left as it is.
        """
        json_path, image_path = Path(json_path), Path(image_path)
        if json_path.exists():
            try:
                existing = json.loads(json_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                existing = {}
            if not isinstance(existing, dict) or not is_prediction(existing):
                return ("holds a person's annotation (not a prediction, or edited since it "
                        "was predicted): left as it is")
            if not self.overwrite_predictions:
                return "already predicted: --overwrite-predictions replaces it"
        epsilon = DEFAULT_EPSILON if self.epsilon is None else self.epsilon
        shapes = mask_to_shapes(classes, names, objects, epsilon, confidence)
        scores = [float(s["description"].split("=")[1]) for s in shapes
                  if s["description"].startswith("p=") and s["label"] != "_background_"]
        relative = Path(os.path.relpath(image_path.resolve(), json_path.parent.resolve()))
        document = labelme_document(
            shapes, relative.as_posix(), *classes.shape,
            image_data=image_path.read_bytes() if self.embed_images else None,
            flags={PREDICTED_FLAG: True},
            extra={KEY: {
                "predicted": True,
                "model": str(model),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "mean_probability": round(float(np.mean(scores)), 4) if scores else None,
                "min_probability": round(float(np.min(scores)), 4) if scores else None,
                "epsilon": epsilon,
                "shapes_sha256": shapes_fingerprint(shapes),
            }},
        )
        document[KEY]["document_sha256"] = document_fingerprint(document)
        files.write_text(json_path, json.dumps(document, indent=1))
        return None


def pixel_confidence(probabilities: np.ndarray, classes: np.ndarray, target: str) -> np.ndarray:
    """The probability of each pixel's predicted class.

    Args:
        probabilities: `(H, W, K)` model outputs.
        classes: `(H, W)` class ids predicted from them.
        target: `"semantic"` or `"instances"`; for instance models the
            foreground probability (1 - background) is used on objects.

    Returns:
        float32 `(H, W)`.
    """
    probabilities = np.asarray(probabilities, np.float32)
    if probabilities.shape[-1] == 1:
        p = probabilities[..., 0]
        return np.where(classes > 0, p, 1.0 - p)
    if target == "instances":
        background = probabilities[..., 0]
        return np.where(classes > 0, 1.0 - background, background)
    return np.take_along_axis(probabilities, classes[..., None].astype(np.int64), -1)[..., 0]
