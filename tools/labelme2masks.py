"""`python tools/labelme2masks.py ...` is `keras-unet labelme2masks ...`."""

import sys

from keras_unet.cli import main

if __name__ == "__main__":
    sys.exit(main(["labelme2masks", *sys.argv[1:]]))
