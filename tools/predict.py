"""`python tools/predict.py ...` is `keras-unet predict ...`."""

import sys

from keras_unet.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
