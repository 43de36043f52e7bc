"""A static web page that runs an exported model in the browser.

The page (`index.html`) loads the `.tflite` file with MediaPipe Tasks for
the web (`@mediapipe/tasks-vision`, WebAssembly on the CPU), segments an
image the user picks and draws the overlay: no server code, the image
stays on the device. Any static file server works (`python -m http.server`);
browsers do not run WebAssembly from `file://` pages.

MediaPipe's web runtime is not bundled: it comes from npm
(`npm install @mediapipe/tasks-vision`), and its module and WebAssembly
files are copied beside the page.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from keras_unet.export.errors import ExportError

TEMPLATE = Path(__file__).resolve().parent / "web" / "index.html"
# The files of @mediapipe/tasks-vision the page loads.
RUNTIME_FILES = ("vision_bundle.mjs", "wasm")
NPM_FOLDER = Path("node_modules") / "@mediapipe" / "tasks-vision"


def find_tasks_vision(path: str | os.PathLike | None = None) -> Path:
    """The folder of the `@mediapipe/tasks-vision` npm package.

    Args:
        path: The package folder, or `None` for
            `node_modules/@mediapipe/tasks-vision` in the current directory.

    Returns:
        The folder.

    Raises:
        ExportError: If it lacks the files the page loads, with the command
            that installs them.
    """
    folder = Path(path) if path is not None else NPM_FOLDER
    missing = [name for name in RUNTIME_FILES if not (folder / name).exists()]
    if missing:
        raise ExportError(
            f"{folder}: not MediaPipe's web runtime (no {', '.join(missing)}); install it with "
            "'npm install @mediapipe/tasks-vision' and pass its folder with --tasks-vision "
            "node_modules/@mediapipe/tasks-vision")
    return folder


def write_web_page(
    model: str | os.PathLike, output_dir: str | os.PathLike,
    tasks_vision: str | os.PathLike | None = None,
) -> Path:
    """Writes a page that segments images with `model` in the browser.

    Args:
        model: An exported `.tflite` file with its standard metadata (any
            keras-unet export of a fixed input size).
        output_dir: The page's folder: `index.html`, `model.tflite` and
            `tasks-vision/` (MediaPipe's module and WebAssembly files).
        tasks_vision: The `@mediapipe/tasks-vision` package folder (see
            `find_tasks_vision`).

    Returns:
        The `index.html` path.

    Raises:
        ExportError: If the model or MediaPipe's web runtime is missing.
    """
    model = Path(model)
    if not model.is_file():
        raise ExportError(f"{model}: no such model file for the web page")
    runtime = find_tasks_vision(tasks_vision)
    output_dir = Path(output_dir)
    target = output_dir / "tasks-vision"
    target.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_FILES:
        source = runtime / name
        if source.is_dir():
            shutil.copytree(source, target / name, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target / name)
    shutil.copy2(model, output_dir / "model.tflite")
    page = output_dir / "index.html"
    shutil.copy2(TEMPLATE, page)
    return page
