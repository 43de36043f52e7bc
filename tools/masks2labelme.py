"""`python tools/masks2labelme.py ...` is `keras-unet masks2labelme ...`."""

import sys

from keras_unet.cli import main

if __name__ == "__main__":
    sys.exit(main(["masks2labelme", *sys.argv[1:]]))
