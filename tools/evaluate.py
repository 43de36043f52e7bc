"""`python tools/evaluate.py ...` is `keras-unet evaluate ...`."""

import sys

from keras_unet.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
