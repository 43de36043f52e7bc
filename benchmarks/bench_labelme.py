"""LabelMe -> masks throughput: keras-unet's converter vs labelme's own pipeline.

labelme's reference is what its `examples/semantic_segmentation/labelme2voc.py`
does per file, with labelme's library functions (`LabelFile`,
`utils.img_data_to_arr`, `utils.shapes_to_label`, `utils.lblsave`, image saved
as PNG), run serially as that script does. keras-unet runs `labelme_to_masks`
with all cores. Both convert the same files in one run, alternately, and the
class masks are compared pixel for pixel.

    python benchmarks/bench_labelme.py [--repeats 3]
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save, table, timed  # noqa: E402

from keras_unet.convert import find_json_files, labelme_to_masks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def labelme_reference(json_files, names, out_dir):
    import labelme

    ids = {"__ignore__": -1, **{n: i for i, n in enumerate(names)}}
    for path in json_files:
        label_file = labelme.LabelFile(filename=str(path))
        image = labelme.utils.img_data_to_arr(label_file.imageData)
        PIL.Image.fromarray(image).save(out_dir / f"{path.stem}.png")
        classes, _ = labelme.utils.shapes_to_label(image.shape, label_file.shapes, ids)
        # labelme 6.3 + imgviz 2.1's lblsave takes uint8 only (ignore -1 -> 255).
        labelme.utils.lblsave(str(out_dir / f"{path.stem}_mask.png"),
                              np.where(classes == -1, 255, classes).astype(np.uint8))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=4, help="copies of the sample set")
    args = parser.parse_args()
    import logging
    logging.getLogger("labelme").setLevel(logging.WARNING)
    try:
        from loguru import logger
        logger.remove()
    except ImportError:
        pass

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "src"
        for copy in range(args.copies):  # the bundled sample, several times
            shutil.copytree(REPO / "datasets" / "nuclei", src / f"copy{copy}")
        names = ["_background_", "nucleus"]
        files = find_json_files(src)

        def ours():
            out = tmp / "ours"
            shutil.rmtree(out, ignore_errors=True)
            labelme_to_masks(src, out, labels=names, force=True)

        def theirs():
            out = tmp / "theirs"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            labelme_reference(files[: len(files) // args.copies], names, out)

        ours_t, theirs_t = [], []
        for _ in range(args.repeats):  # alternate, so both see the same machine load
            ours_t += timed(ours, 1)
            theirs_t += timed(theirs, 1)
        n_ours, n_theirs = len(files), len(files) // args.copies
        ours_rate = n_ours / median(ours_t)
        theirs_rate = n_theirs / median(theirs_t)
        differing = 0
        for path in files[:n_theirs]:
            a = np.asarray(PIL.Image.open(tmp / "ours" / "masks" / "copy0" / f"{path.stem}.png"))
            b = np.asarray(PIL.Image.open(tmp / "theirs" / f"{path.stem}_mask.png"))
            differing += int((a != b).sum())
    rows = [
        {"converter": "keras-unet labelme2masks", "files": n_ours,
         "median_s": median(ours_t), "files_per_s": ours_rate},
        {"converter": "labelme (labelme2voc steps)", "files": n_theirs,
         "median_s": median(theirs_t), "files_per_s": theirs_rate},
    ]
    print(table(rows, ["converter", "files", "median_s", "files_per_s"]))
    print(f"speed-up: {ours_rate / theirs_rate:.1f}x on {os.cpu_count()} cores; "
          f"mask pixels differing: {differing}")
    print(save("labelme", {"rows": rows, "speedup": ours_rate / theirs_rate,
                           "differing_pixels": differing, "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
