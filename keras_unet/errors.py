"""The base of the errors keras-unet raises for input it cannot use.

Every such error says which file, folder, flag or option is wrong and what
to do about it. The command line prints the message alone, without a
traceback, and exits with code 1; a traceback means a bug in keras-unet.
"""


class KerasUnetError(Exception):
    """A file, folder or option that keras-unet cannot use; the message says why."""
