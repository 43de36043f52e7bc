"""tflite-support on a `.tflite` file: a test-time oracle of the metadata.

Runs in its own virtual environment (tflite-support pins protobuf < 4,
which TensorFlow 2.21 cannot use):

    python tflite_support_metadata.py MODEL OUT_DIR [IMAGE ...]

Writes `OUT_DIR/result.json`: `metadata` (the standard metadata as
`MetadataDisplayer` reads it), `files` (the packed associated files),
`labels` (the text of `labels.txt`), and for each image the category
mask of the Task Library's `ImageSegmenter` as `.npy` (`masks`, with the
segmenter's `category_names`).
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tflite_support import metadata
from tflite_support.task import core, vision


def main(model: str, out_dir: str, images: list[str]) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    displayer = metadata.MetadataDisplayer.with_model_file(model)
    files = displayer.get_packed_associated_file_list()
    result = {
        "metadata": json.loads(displayer.get_metadata_json()),
        "files": files,
        "labels": displayer.get_associated_file_buffer("labels.txt").decode()
        if "labels.txt" in files else None,
        "masks": {},
        "category_names": None,
    }
    if images:
        segmenter = vision.ImageSegmenter.create_from_options(
            vision.ImageSegmenterOptions(base_options=core.BaseOptions(file_name=model)))
        for i, path in enumerate(images):
            pixels = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))
            segmentation = segmenter.segment(
                vision.TensorImage.create_from_array(pixels)).segmentations[0]
            result["category_names"] = [c.category_name for c in segmentation.colored_labels]
            target = out / f"mask_{i}.npy"
            np.save(target, np.asarray(segmentation.category_mask).reshape(pixels.shape[:2]))
            result["masks"][path] = str(target)
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
