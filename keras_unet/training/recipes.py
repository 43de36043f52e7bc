"""Training recipes: the settings that measured best, by kind of data and machine.

`keras-unet train --recipe NAME` starts from one of these (flags override
it); the benchmarks train with the same dictionaries, so a recipe is what
the numbers in `docs/benchmarks/` were measured with:

- `nuclei-cpu`: microscopy nuclei on a 2-core CPU (`bench_accuracy.py`):
  16 filters, depth 4, batch norm, both per-image normalizations as input
  channels (`per_image_percentile`, so no brightness or contrast
  augmentation, see `Augment.for_model`), stain augmentation, 128-pixel
  crops drawn by area, 36 x 250 steps at lr 3e-3, the instance target with
  a 2-pixel boundary. About 40 minutes on 2 cores in bfloat16 (`auto` on
  CPUs that have it), three times the 12 x 250 steps' 20 minutes in
  float32; DSB2018 validation fg Dice 0.930, image Dice 0.910, mean AP
  0.570 (the bundled `nuclei_dsb2018`, seed 0; seed 1: 0.929 / 0.906 /
  0.554; 24 x 250 steps: 0.927 / 0.907 / 0.562 and 0.927 / 0.902 / 0.543).
- `nuclei-gpu`: the same, wider and longer (32 filters, 256-pixel crops,
  100 x 100 steps of 16). Not measured yet.
- `street-cpu`: street scenes and other many-class datasets
  (`bench_camvid.py`): a MobileNetV2 encoder trained from scratch with a
  24-filter decoder, batch norm, Dice + CE with median-frequency class
  weights, horizontal flips and scale 0.75-1.5 (no vertical flips or
  rotations: the sky stays up), 256-pixel crops, lr 3e-3 with a cosine
  decay, a 45-minute budget. CamVid validation mIoU 0.502, 0.493 and 0.513
  over three seeds (mean 0.503; the plain 24-filter U-Net: 0.442,
  EfficientNet-B0: 0.449, lr 6e-3: 0.476, lr 1.5e-3: 0.503).
- `street-gpu`: the same, wider and deeper, 352-pixel crops, 150 epochs.
  Not measured yet.
"""

from __future__ import annotations

import copy

# Stain augmentation for microscopy (`TrainConfig.augment`): with per-image
# normalization it is what makes stained and brightfield images work
# (measured on DSB2018, see docs/benchmarks/accuracy.md).
STAIN_AUGMENTATION = {"hue": 0.08, "saturation": [0.6, 1.4], "grayscale": 0.2, "invert": 0.3}
# Street scenes: horizontal flips only (the sky stays up), no rotations.
STREET_AUGMENTATION = {"vertical_flip": False, "rotate90": False, "scale": [0.75, 1.5],
                       "brightness": 0.1, "contrast": [0.8, 1.2]}

_NUCLEI_MODEL = {"normalization": "batch", "input_normalization": "per_image_percentile",
                 "depth": 4}

RECIPES = {
    "nuclei-cpu": dict(
        target="instances", boundary_width=2, channels=3, crop_size=128, batch_size=8,
        epochs=36, steps_per_epoch=250, lr=3e-3, sampling="area", early_stopping=0,
        model={"filters": 16, **_NUCLEI_MODEL}, augment=STAIN_AUGMENTATION,
    ),
    "nuclei-gpu": dict(
        target="instances", boundary_width=2, channels=3, crop_size=256, batch_size=16,
        epochs=100, steps_per_epoch=100, lr=2e-3, sampling="area", early_stopping=0,
        model={"filters": 32, **_NUCLEI_MODEL}, augment=STAIN_AUGMENTATION,
    ),
    "street-cpu": dict(
        # The budget picks the epochs (at most `epochs`) from the measured step
        # and validation times; 100 steps an epoch keep validation a small share.
        # A MobileNetV2 encoder from scratch (mIoU 0.502) beat the plain
        # 24-filter U-Net (0.442) and EfficientNet-B0 (0.449: 1.65x the step
        # time, 13 epochs) in the same budget, and is phone-sized.
        crop_size=256, batch_size=8, epochs=100, steps_per_epoch=100, time_budget=45,
        lr=3e-3, schedule="cosine", loss="dice_ce", class_weighting="median_frequency",
        model={"backbone": "mobilenet_v2", "filters": 24, "normalization": "batch"},
        augment=STREET_AUGMENTATION, early_stopping=0,
    ),
    "street-gpu": dict(
        crop_size=352, batch_size=16, epochs=150, lr=2e-3, schedule="cosine",
        loss="dice_ce", class_weighting="median_frequency",
        model={"filters": 32, "depth": 5, "normalization": "batch"},
        augment=STREET_AUGMENTATION, early_stopping=0,
    ),
}


def recipe(name: str) -> dict:
    """A copy of recipe `name`'s `TrainConfig` values.

    Raises:
        KeyError: For an unknown name, listing the recipes.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return copy.deepcopy(RECIPES[name])
