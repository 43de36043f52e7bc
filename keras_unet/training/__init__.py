"""Training: configuration, losses, metrics and the resumable run.

- `targets`: how losses and metrics read masks (ignore ids, one-hot, sigmoid).
- `losses`: cross-entropy, Dice, Dice+CE, focal, Tversky.
- `metrics`: Dice and IoU during training.
- `config`: `TrainConfig`, every option of a run, checked once.
- `recipes`: the settings measured best, by kind of data (`train --recipe`).
- `runs`: the run folder, its commit record and its split.
- `callbacks`: the epoch line, the NaN guard, the recorder, validation.
- `train`: `train(config)`, which composes all of the above.
"""
