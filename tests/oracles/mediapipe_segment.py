"""MediaPipe Tasks' ImageSegmenter on image files: a test-time oracle.

Runs in its own virtual environment (mediapipe cannot share one with
TensorFlow 2.21), started by the tests as a subprocess:

    python mediapipe_segment.py MODEL OUT_DIR IMAGE [IMAGE ...]

Loads MODEL unchanged, as an app would, and writes `OUT_DIR/result.json`
(`{"labels": [...], "masks": {image: npy}}`) with each image's category
mask as `.npy`. Images are read as RGB (MediaPipe's own reader keeps a
greyscale PNG at one channel, which segmentation models refuse).
"""

import json
import sys
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision
from PIL import Image


def main(model: str, out_dir: str, images: list[str]) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=model), output_category_mask=True)
    result = {"labels": None, "masks": {}}
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        result["labels"] = list(segmenter.labels)
        for i, path in enumerate(images):
            pixels = np.asarray(Image.open(path).convert("RGB"))
            image = mp.Image(image_format=mp.ImageFormat.SRGB,
                             data=np.ascontiguousarray(pixels))
            mask = segmenter.segment(image).category_mask.numpy_view()
            target = out / f"mask_{i}.npy"
            np.save(target, np.asarray(mask).reshape(pixels.shape[:2]))
            result["masks"][path] = str(target)
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
