"""Tests for keras_unet.export.web: the exported model in a real browser.

The page runs in Debian's headless Chromium, driven by Playwright, served
from 127.0.0.1; MediaPipe's web runtime comes from npm (`.ci/run` installs
it under `.ci/node`). Where any of them is absent the browser test skips.
"""

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from keras_unet.cli import main
from keras_unet.export import ExportError, export_tflite
from keras_unet.export.web import write_web_page
from keras_unet.inference.predict import load_predictor, predict_files

REPO = Path(__file__).resolve().parents[1]
TASKS_VISION = Path(os.environ.get(
    "KERAS_UNET_TASKS_VISION", REPO / ".ci" / "node" / "node_modules" / "@mediapipe" /
    "tasks-vision"))
CHROMIUM = Path(os.environ.get("KERAS_UNET_CHROMIUM", "/usr/bin/chromium"))
# Without the networking flags Chromium keeps calling hosts it cannot reach.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium, or a skip that says what is missing."""
    playwright = pytest.importorskip("playwright.sync_api", reason="no playwright (pip)")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    if not (TASKS_VISION / "vision_bundle.mjs").is_file():
        pytest.skip(f"no MediaPipe web runtime at {TASKS_VISION} (npm install "
                    "@mediapipe/tasks-vision)")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def serve():
    """Serves a folder on 127.0.0.1; returns its base URL."""
    servers = []

    def start(folder: Path) -> str:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def test_the_page_computes_predicts_mask_in_a_real_browser(
        model, held_out, tmp_path, browser, serve):
    names, verification, _ = held_out
    export_tflite(model, tmp_path / "model_float32.tflite", names=names,
                  verification_images=verification, input_size=(128, 128), latency_runs=0)
    page_dir = tmp_path / "web"
    write_web_page(tmp_path / "model_float32.tflite", page_dir, TASKS_VISION)
    images = tmp_path / "images"
    images.mkdir()
    for i, window in enumerate(verification[:3]):
        PIL.Image.fromarray(np.round(window * 255).astype(np.uint8)).save(images / f"{i}.png")
        shutil.copy(images / f"{i}.png", page_dir / f"{i}.png")
    predict_files(load_predictor(tmp_path / "model_float32.tflite"), images, tmp_path / "out")
    page = browser.new_page()
    page.goto(serve(page_dir) + "/index.html")
    page.wait_for_function("window.kerasUnet !== undefined", timeout=120_000)
    assert page.evaluate("window.kerasUnet.error || null") is None
    assert page.evaluate("window.kerasUnet.labels") == names
    agreement = []
    for i in range(3):
        result = page.evaluate(f"window.kerasUnet.segmentUrl('{i}.png')")
        mask = np.array(result["mask"], np.uint8).reshape(result["height"], result["width"])
        ours = np.asarray(PIL.Image.open(tmp_path / "out" / "masks" / f"{i}.png"))
        agreement.append(mask == ours)
    assert np.mean(agreement) >= 0.9999
    # As a person uses it: pick a file, and the overlay is drawn.
    page.set_input_files("#file", str(images / "0.png"))
    page.wait_for_function("document.getElementById('status').textContent.includes('0.png')",
                           timeout=60_000)
    assert page.evaluate("[view.style.display, view.width, view.height]") == ["block", 128, 128]
    assert 0.02 < np.mean([np.asarray(PIL.Image.open(p)) for p in
                           sorted((tmp_path / "out" / "masks").glob("*.png"))]) < 0.98
    page.close()


def test_the_page_runs_the_bundled_model_and_its_percentile_sort(
        nuclei_dataset, tmp_path, browser, serve):
    """`nuclei_dsb2018` normalizes its input with a sort (`TOPK_V2`), an op the
    tiny model above does not have: MediaPipe's web runtime runs it too, and
    its class masks are `predict`'s on the same `.tflite`."""
    code = main(["export", "nuclei_dsb2018", str(tmp_path / "x"), "--data",
                 str(nuclei_dataset), "--precision", "float32", "--input-size", "256",
                 "--web", str(tmp_path / "web"), "--tasks-vision", str(TASKS_VISION)])
    assert code == 0
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((nuclei_dataset / "images").glob("*.png"))[:2]:
        with PIL.Image.open(path) as image:  # at the model's input size, as the page sees it
            crop = image.convert("RGB").crop((0, 0, 256, 256))
        crop.save(images / path.name)
        crop.save(tmp_path / "web" / path.name)
    predict_files(load_predictor(tmp_path / "x" / "model_float32.tflite"), images,
                  tmp_path / "out", probabilities=True)  # as they are, as the page runs them
    page = browser.new_page()
    page.goto(serve(tmp_path / "web") + "/index.html")
    page.wait_for_function("window.kerasUnet !== undefined", timeout=120_000)
    assert page.evaluate("window.kerasUnet.error || null") is None
    for path in sorted(images.glob("*.png")):
        result = page.evaluate(f"window.kerasUnet.segmentUrl('{path.name}')")
        mask = np.array(result["mask"], np.uint8).reshape(result["height"], result["width"])
        # The page's category mask is the most likely class of each pixel
        # (background, nucleus, boundary), before any object is read from it.
        ours = np.load(tmp_path / "out" / "probabilities" / f"{path.stem}.npy").argmax(-1)
        assert {0, 1, 2} <= set(np.unique(ours)) and np.mean(mask == ours) >= 0.999, path.name
    page.close()


def test_a_missing_web_runtime_names_the_npm_package(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(ExportError, match="npm install @mediapipe/tasks-vision"):
        write_web_page(tmp_path / "m.tflite", tmp_path / "web", tmp_path / "nothing")
    assert not (tmp_path / "web").exists()


def test_export_web_refuses_a_dynamic_model_before_exporting(tmp_path, capsys):
    code = main(["export", "nuclei_dsb2018", str(tmp_path / "x"), "--dynamic",
                 "--web", str(tmp_path / "web")])
    err = capsys.readouterr().err
    assert code != 0 and "MediaPipe runs a model of dynamic size at 1x1" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()
