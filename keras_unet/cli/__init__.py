"""The `keras-unet` command: parses arguments and calls library functions.

`keras-unet` with no arguments runs the main job on the bundled sample
dataset (`keras-unet run`). `tools/*.py` call the same subcommands.

Output is quiet by default: our own tables, progress bars and a recap, not
TensorFlow's C++ and absl logs (`--verbose` brings them back). A mistake in
the input ends in one line naming the file or flag (`error: ...`) and exit
code 1; usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from keras_unet import __version__
from keras_unet.cli import convert, model, train
from keras_unet.errors import KerasUnetError
from keras_unet.logs import import_tensorflow_quietly, set_quiet

MAIN_JOB_LINE = (
    "keras-unet: no command given, so this runs the main job on the bundled sample "
    "dataset (LabelMe -> masks -> fine-tuned U-Net -> TFLite; about 3 minutes on 2 CPU "
    "cores).\n"
    "`keras-unet --help` lists the commands."
)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default and keeps paragraphs.

    An option whose parser default is `None` (unset: `train` takes its
    default from the config, and says so in its help) shows no
    "(default: None)".
    """

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-unet` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="keras-unet", formatter_class=_Formatter,
        description="U-Net segmentation on Keras 3: LabelMe -> masks -> model -> TFLite.\n"
                    "With no command, runs the main job on the bundled sample (`run`).",
    )
    parser.add_argument("--version", action="version", version=f"keras-unet {__version__}")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true",
                         help="show debug messages and TensorFlow's own logs")
    parser.add_argument("-v", "--verbose", action="store_true", dest="verbose_top",
                        help="show debug messages and TensorFlow's own logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=_Formatter, parents=[verbose], **kwargs)

    train.add_parsers(add)
    convert.add_parsers(add)
    model.add_parsers(add)
    return parser


def quiet(verbose: bool) -> None:
    """Sets up logging: our messages as plain lines; TensorFlow's silenced.

    Must run before TensorFlow is imported (its C++ logging reads the
    environment once, at import).
    """
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    set_quiet(True)
    handler = _StderrHandler()
    handler.setFormatter(_PlainFormatter())
    ours = logging.getLogger("keras_unet")
    ours.handlers[:] = [handler]  # the root logger has none: nothing prints twice
    ours.setLevel(logging.INFO)
    for name in ("tensorflow", "absl", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
    warnings.filterwarnings("ignore", module="tensorflow")
    warnings.filterwarnings("ignore", module="ai_edge_litert")


class _StderrHandler(logging.StreamHandler):
    """Writes to the `sys.stderr` of the moment, not the one it was made with
    (a caller, a notebook or pytest may replace it between two commands)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class _PlainFormatter(logging.Formatter):
    """`message` for information, `warning: message` for the rest."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def _needs_tensorflow(args) -> bool:
    """Whether a command loads TensorFlow (LiteRT models and conversions do not)."""
    if args.command in ("run", "train", "export"):
        return True
    return args.command in ("predict", "evaluate") and args.model.suffix == ".keras"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-unet` command.

    Args:
        argv: Arguments (default: `sys.argv[1:]`). No command means `run`.

    Returns:
        The exit code: 0 on success, 1 when an input could not be used
        (the message says which), 2 on usage errors, 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        print(MAIN_JOB_LINE, flush=True)
        args = parser.parse_args([*argv, "run"])
    verbose = args.verbose or args.verbose_top
    quiet(verbose)
    try:
        if args.command in ("predict", "evaluate"):
            from keras_unet.inference.predict import model_file

            args.model = model_file(args.model)  # resolved (and any shadowing said) once
        if _needs_tensorflow(args):
            import_tensorflow_quietly()
        return args.func(args)
    except KerasUnetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a folder or file the user pointed at
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
