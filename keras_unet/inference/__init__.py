"""Inference: run a trained or exported model on images of any size.

- `predict`: load a `.keras` or `.tflite` model (`load_predictor`), predict
  one image by tiles (`predict_image`) or a folder (`predict_files`).
- `scale`: images rescaled to the training object size, masks mapped back.
- `confidence`: how sure a model is of an image (`uncertain_share`).
- `preannotate`: predictions as LabelMe annotations to correct.
"""
