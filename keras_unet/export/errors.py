"""The errors of an export."""

from keras_unet.errors import KerasUnetError


class ExportError(KerasUnetError, ValueError):
    """An export that cannot be made (bad option, unsupported op...)."""


class ExportVerificationError(KerasUnetError, RuntimeError):
    """The exported model disagrees with the Keras model beyond the threshold."""
