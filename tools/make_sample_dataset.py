"""Rebuilds datasets/nuclei/ from ../shared/datasets/dsb2018_nuclei (maintainers only).

Picks a fixed, stratified subset of the DSB2018 nuclei images and stores
them as LabelMe annotations (one polygon per nucleus, group_id = nucleus)
with `keras-unet masks2labelme`, so that the main job exercises the whole
LabelMe -> masks -> training path.

    python tools/make_sample_dataset.py [--source ../shared/datasets/dsb2018_nuclei]
"""

import argparse
import csv
import random
import shutil
import tempfile
from pathlib import Path

from keras_unet.data.convert import masks_to_labelme
from keras_unet.files import write_text

REPO = Path(__file__).resolve().parents[1]
# (modality, height, width) -> (train images, val images)
# 29 validation images, not 14: between random draws of 14 DSB2018 validation
# images the U-Net-minus-Otsu margin of one model had a standard deviation of
# 0.019-0.025 mean AP (about two thirds of that with 27; see docs/benchmarks/main-job.md).
# 20 colour images: with 10 the U-Net stayed below Otsu on colour brightfield.
PICK = {
    ("fluorescence", "256", "256"): (26, 16),
    ("fluorescence", "360", "360"): (8, 5),
    ("color_brightfield", "256", "320"): (20, 8),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(REPO.parent / "shared/datasets/dsb2018_nuclei"))
    parser.add_argument("--output", default=str(REPO / "datasets/nuclei"))
    args = parser.parse_args()
    source, output = Path(args.source), Path(args.output)
    rows = list(csv.DictReader(open(source / "metadata.csv")))
    rng = random.Random(2018)
    chosen = {"train": [], "val": []}
    for (modality, h, w), counts in PICK.items():
        for split, count in zip(("train", "val"), counts):
            pool = sorted(
                r["id"] for r in rows
                if (r["modality"], r["height"], r["width"], r["split"]) == (modality, h, w, split)
            )
            chosen[split] += rng.sample(pool, count)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for sub in ("images", "masks", "labels"):
            (tmp / sub).mkdir()
            for name in chosen["train"] + chosen["val"]:
                shutil.copy(source / sub / f"{name}.png", tmp / sub / f"{name}.png")
        # Replace the pairs, keep what is not generated (README.md).
        for old in [*output.glob("*.json"), *output.glob("*.png")]:
            old.unlink()
        summary = masks_to_labelme(
            tmp / "images", tmp / "masks", output,
            labels=["_background_", "nucleus"], instances_dir=tmp / "labels",
            foreground_value=255, progress=True,
        )
    print(summary.format())
    write_text(output / "val.txt", "\n".join(sorted(chosen["val"])) + "\n")
    write_text(output / "modalities.csv", modalities_csv(rows, chosen["train"] + chosen["val"]))


def modalities_csv(rows: list[dict], names: list[str]) -> str:
    """`name,modality` lines of the chosen images (the main job reports per modality)."""
    modality = {r["id"]: r["modality"] for r in rows}
    return "name,modality\n" + "".join(f"{n},{modality[n]}\n" for n in sorted(names))


if __name__ == "__main__":
    main()
