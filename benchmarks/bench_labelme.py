"""LabelMe -> masks throughput: keras-unet's converter vs labelme's own pipeline.

labelme's reference is what its `examples/semantic_segmentation/labelme2voc.py`
does per file (the script is not installed with labelme, so its steps are run
here with labelme's own library functions): `LabelFile`, the image bytes
written out unchanged, `utils.img_data_to_arr`, `utils.shapes_to_label`,
`utils.lblsave`, `np.save` of the label array and, unless `--noviz`, an
`imgviz.label2rgb` visualization saved as JPEG; serially, as the script runs.
keras-unet runs `labelme_to_masks` with all cores, without overlays (the
like-for-like of `--noviz`) and with `--overlays` (the like-for-like of the
default). All four convert the same files in one run, in turn, and the class
masks are compared pixel for pixel.

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

from keras_unet.data.convert import find_json_files, labelme_to_masks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def labelme_reference(json_files, names, out_dir, viz):
    import imgviz
    import labelme

    ids = {"__ignore__": -1, **{n: i for i, n in enumerate(names)}}
    for path in json_files:
        label_file = labelme.LabelFile(filename=str(path))
        (out_dir / f"{path.stem}.jpg").write_bytes(label_file.imageData)  # as the script
        image = labelme.utils.img_data_to_arr(label_file.imageData)
        classes, _ = labelme.utils.shapes_to_label(image.shape, label_file.shapes, ids)
        # labelme 6.3 + imgviz 2.1's lblsave takes uint8 only (ignore -1 -> 255).
        labelme.utils.lblsave(str(out_dir / f"{path.stem}_mask.png"),
                              np.where(classes == -1, 255, classes).astype(np.uint8))
        np.save(out_dir / f"{path.stem}.npy", classes)
        if viz:  # the script calls rgb2gray, which fails on greyscale images
            grey = image if image.ndim == 2 else imgviz.rgb2gray(image[..., :3])
            picture = imgviz.label2rgb(np.maximum(classes, 0), grey, font_size=15,
                                       label_names=names, loc="rb")
            imgviz.io.imsave(str(out_dir / f"{path.stem}_viz.jpg"), picture)


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

        def ours(overlays):
            labelme_to_masks(src, tmp / "ours", labels=names, overlays=overlays, force=True)

        def theirs(viz):
            (tmp / "theirs").mkdir()
            labelme_reference(files[: len(files) // args.copies], names, tmp / "theirs", viz)

        runs = {  # name -> (function, files converted)
            "keras-unet labelme2masks": (lambda: ours(False), len(files)),
            "labelme2voc.py --noviz": (lambda: theirs(False), len(files) // args.copies),
            "keras-unet labelme2masks --overlays": (lambda: ours(True), len(files)),
            "labelme2voc.py": (lambda: theirs(True), len(files) // args.copies),
        }
        times = {name: [] for name in runs}
        for _ in range(args.repeats):  # in turn, so all see the same machine load
            for name, (fn, _) in runs.items():
                folder = "ours" if name.startswith("keras-unet") else "theirs"
                shutil.rmtree(tmp / folder, ignore_errors=True)  # every run writes anew
                times[name] += timed(fn, 1)
        differing = 0
        for path in files[: len(files) // args.copies]:
            a = np.asarray(PIL.Image.open(tmp / "ours" / "masks" / "copy0" / f"{path.stem}.png"))
            b = np.asarray(PIL.Image.open(tmp / "theirs" / f"{path.stem}_mask.png"))
            differing += int((a != b).sum())
    rows = [{"converter": name, "files": n, "median_s": median(times[name]),
             "files_per_s": n / median(times[name])} for name, (_, n) in runs.items()]
    rate = {row["converter"]: row["files_per_s"] for row in rows}
    speedups = {
        "without visualization": rate["keras-unet labelme2masks"]
        / rate["labelme2voc.py --noviz"],
        "with visualization": rate["keras-unet labelme2masks --overlays"]
        / rate["labelme2voc.py"],
        "defaults": rate["keras-unet labelme2masks"] / rate["labelme2voc.py"],
    }
    print(table(rows, ["converter", "files", "median_s", "files_per_s"]))
    for name, value in speedups.items():
        print(f"speed-up {name}: {value:.1f}x")
    print(f"on {os.cpu_count()} cores; mask pixels differing: {differing}")
    print(save("labelme", {"rows": rows, "speedups": speedups,
                           "differing_pixels": differing, "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
