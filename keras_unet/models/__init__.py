"""Models: the U-Net and what travels with it.

- `blocks`: the small layers and block functions the builder composes.
- `backbones`: Keras Applications encoders (MobileNet, EfficientNet, ResNet).
- `model`: `build_unet` and the input-size rules.
- `pretrained`: the bundled pre-trained models.
- `metadata`: the sidecar JSON that says how to feed a model and read it.
- `model_metadata`: the standard TFLite Model Metadata (MediaPipe, Task
  Library).

`metadata` and `model_metadata` are the contract an exported model
carries: `keras_unet.export` writes it and `keras_unet.inference` reads it,
so it lives here, before both.
"""
