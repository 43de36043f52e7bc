"""How sure a model is of an image's objects.

A model shown an image unlike its training images (another stain, exposure or
magnification) seldom fails with confident mistakes: its foreground
probabilities stay between the classes. `uncertain_share` measures that: the
share of the pixels the model might call an object (foreground probability
above `UNSURE_LOW`) that it does not call one with confidence (below
`UNSURE_HIGH`). `predict` lists the images above `UNSURE_SHARE` and writes every
image's share to `predictions.csv`; `evaluate` writes it to `per_image.csv`.

Measured with `nuclei_dsb2018` (`--object-size auto`, 2026-12-02): on the 113
DSB2018 validation images the share correlates with the image's foreground
Dice at -0.77; the 11 images above 0.45 score Dice 0.748 and mean AP 0.169,
the other 102 0.917 and 0.552. On the 83 images of the bundled sample
(`datasets/nuclei`): -0.77; the 14 above 0.45 score Dice 0.795, the rest 0.905.
"""

from __future__ import annotations

import numpy as np

UNSURE_LOW, UNSURE_HIGH = 0.1, 0.9
UNSURE_SHARE = 0.45


def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """`(H, W)` probability of any object class: the sigmoid channel, or one
    minus the background's softmax probability."""
    if probabilities.shape[-1] == 1:
        return probabilities[..., 0]
    return 1.0 - probabilities[..., 0]


def foreground_confidence(probabilities: np.ndarray, region: np.ndarray) -> float:
    """How sure a prediction is about its objects: the mean distance of the
    foreground probability from 0.5 over `region` (0 for an empty region).

    Args:
        probabilities: `(H, W, K)` model outputs.
        region: `(H, W)` bool, the pixels to judge (where either of two
            predictions being compared sees objects).

    Returns:
        A value in [0, 0.5].
    """
    if not region.any():
        return 0.0
    return float(np.abs(foreground_probability(probabilities)[region] - 0.5).mean())


def uncertain_share(probabilities: np.ndarray) -> float:
    """The share of the pixels that might be an object that the model is unsure of.

    Args:
        probabilities: `(H, W, K)` outputs of a model with a background
            class (channel 0), or one sigmoid channel.

    Returns:
        A fraction in [0, 1]: pixels with foreground probability in
        (`UNSURE_LOW`, `UNSURE_HIGH`) over those above `UNSURE_LOW`; 0 where no
        pixel is above it.
    """
    foreground = foreground_probability(np.asarray(probabilities, np.float32))
    possible = foreground > UNSURE_LOW
    if not possible.any():
        return 0.0
    return float((foreground[possible] < UNSURE_HIGH).mean())
