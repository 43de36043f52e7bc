"""Evaluation: how good a model is, measured as the field reports it.

- `scores`: confusion matrices, per-class IoU/Dice, object scores (mean AP).
- `groups`: images scored apart by brightness and by object size.
- `evaluate`: a model on a dataset: tables, per-image CSV, worst images.
- `baselines`: Otsu and friends, scored the same way, to beat.
"""
