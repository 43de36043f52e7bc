"""Inference: run a trained or exported model on images of any size.

- `predict`: load a `.keras` or `.tflite` model (`load_predictor`), predict
  one image by tiles (`predict_image`) or a folder (`predict_files`).
- `scale`: images rescaled to the training object size, masks mapped back.
- `preannotate`: predictions as LabelMe annotations to correct.
"""
