"""`python tools/train.py ...` is `keras-unet train ...`."""

import sys

from keras_unet.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
