"""`python tools/export_tflite.py ...` is `keras-unet export ...`."""

import sys

from keras_unet.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
