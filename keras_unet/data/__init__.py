"""Data: from annotations and masks to batches a model trains on.

- `labelme`: reading LabelMe JSON and rasterizing its shapes.
- `labels`: label maps (`labels.txt`), class ids, colours.
- `convert`: LabelMe folders to mask datasets and back.
- `readers`: the one reader of images and masks every stage uses.
- `pairs`: a dataset's image/mask pairs, its checks and splits.
- `instances`: objects: instance ids, the boundary target, post-processing.
- `visualize`: coloured masks and overlays.
- `augment`: joint image/label augmentation.
- `weights`: class and border weights computed from the masks.
- `pipeline`: the `tf.data` pipeline (read, augment, batch, prefetch).

Only `augment` and `pipeline` import TensorFlow.
"""
