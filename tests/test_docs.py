"""The documentation's commands and code run as written.

Every `bash` and `python` block of `docs/` runs here, unless an HTML comment
`<!-- not run: reason -->` just above it says why it cannot (a GPU, a
cluster, an hour of training). The guides form one walkthrough on the
bundled sample, run in one folder in the order of `WALKTHROUGH`: the
datasets page converts it, the training page trains `runs/exp1`, the later
pages evaluate, pre-annotate and export that run. The deployment page's
snippets run in the runtimes they are written for, against `predict`.
The README's command examples must be lines of the walkthrough.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import REPO, oracle_python

import keras_unet
from keras_unet.export import export_tflite
from keras_unet.inference.predict import load_predictor, predict_files

DOCS = REPO / "docs"
WALKTHROUGH = ["guides/datasets.md", "guides/training.md", "guides/evaluation.md",
               "guides/annotation.md", "guides/models.md", "guides/export.md"]
# Pages whose blocks other tests here run: the deployment snippets need a model
# and their runtimes (test_the_deploy_snippets_give_predicts_mask).
RUN_ELSEWHERE = {"guides/deployment.md"}
RUNNABLE = ("bash", "python")


@dataclass
class Block:
    page: str
    line: int
    language: str
    code: str
    not_run: str | None  # the reason, where the page says it cannot run


def blocks(page: str) -> list[Block]:
    text = (DOCS / page).read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"(?:<!-- not run: (.*?) -->\n)?```(\w*)\n(.*?)```", text, re.S):
        line = text[:match.start()].count("\n") + 1
        found.append(Block(page, line, match.group(2), match.group(3), match.group(1)))
    return found


def all_pages() -> list[str]:
    return sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))


def test_every_code_block_runs_or_says_why_not():
    """A new block is run by default: a page outside the walkthrough must
    mark its blocks, so nothing goes untested by accident."""
    unaccounted = [f"{b.page}:{b.line}" for page in all_pages() for b in blocks(page)
                   if b.language in RUNNABLE and not b.not_run
                   and page not in WALKTHROUGH and page not in RUN_ELSEWHERE]
    assert not unaccounted, f"blocks neither run nor marked <!-- not run: ... -->: {unaccounted}"
    reasons = [b.not_run for page in all_pages() for b in blocks(page) if b.not_run is not None]
    assert all(reason.strip() for reason in reasons)


def test_the_public_api_page_lists_every_public_name():
    page = (DOCS / "reference" / "index.md").read_text(encoding="utf-8")
    missing = [name for name in keras_unet.__all__
               if f"[`{name}`][{keras_unet._EXPORTS[name]}.{name}]" not in page]
    assert not missing


def test_the_reference_documents_every_module():
    text = "".join(p.read_text(encoding="utf-8") for p in (DOCS / "reference").glob("*.md"))
    package = Path(keras_unet.__file__).parent
    modules = {".".join(p.relative_to(package.parent).with_suffix("").parts)
               for p in package.rglob("*.py") if p.name != "__init__.py"}
    modules -= {"keras_unet.lazy"} | {m for m in modules if m.startswith("keras_unet.cli")}
    assert not sorted(m for m in modules if f"::: {m}\n" not in text)


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """The folder the walkthrough runs in: the repository's `datasets/`
    (read only) and what the pages write."""
    folder = tmp_path_factory.mktemp("walkthrough")
    (folder / "datasets").symlink_to(REPO / "datasets")
    return folder


def run_block(block: Block, folder: Path) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    if block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        command = [sys.executable, "-c", block.code]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=900,
                          env=env)


# What each page leaves behind, for the pages after it.
PRODUCES = {
    "guides/datasets.md": ["data/labels.txt", "data/masks", "data/instances", "data/overlays"],
    "guides/training.md": ["runs/exp1/checkpoints/best.keras", "runs/exp1/log.csv"],
    "guides/evaluation.md": ["eval/scores.json", "eval_all/scores.json",
                             "eval_bundled/scores.json", "predictions/masks",
                             "predictions_rescaled/masks"],
    "guides/annotation.md": ["new_images"],
    "guides/models.md": ["unet.keras", "pre_annotated"],
    "guides/export.md": ["exported/model_float32.tflite", "exported/model_float16.tflite",
                         "exported/labels.txt", "exported_bundled/model_int8.tflite"],
}


@pytest.mark.parametrize("page", WALKTHROUGH)
def test_the_walkthrough_pages_run_in_order(walkthrough, page):
    for block in blocks(page):
        if block.language not in RUNNABLE or block.not_run:
            continue
        result = run_block(block, walkthrough)
        assert result.returncode == 0, (f"{page}:{block.line}\n{block.code}\n"
                                        f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    for path in PRODUCES[page]:
        assert (walkthrough / path).exists(), f"{page} did not write {path}"


def test_the_walkthrough_results_are_what_the_pages_say(walkthrough):
    if not (walkthrough / "exported" / "labels.txt").exists():
        pytest.skip("the walkthrough did not run")
    # The continued run did the one more epoch its command asked for.
    rows = (walkthrough / "runs/exp1/log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3
    # Pre-annotation wrote a LabelMe file beside each new image.
    images = sorted((walkthrough / "new_images").glob("*.png"))
    assert images and all(p.with_suffix(".json").is_file() for p in images)
    # The export's labels: one line per output channel of the instance model.
    labels = (walkthrough / "exported" / "labels.txt").read_text().split()
    assert labels == ["_background_", "nucleus", "_boundary_"]
    scores = json.loads((walkthrough / "eval_bundled/scores.json").read_text())
    assert scores


def test_the_readme_examples_are_those_of_the_guides():
    """The README shows one example per command; each is a line of a guide
    page, where it runs (or says why it cannot), and its Keras example is
    the models page's, which runs."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it", 1)[1].split("\n## ", 1)[0]

    def command_lines(code: str) -> set[str]:
        return {re.sub(r"\s+", " ", line.split("#")[0]).strip()
                for line in code.replace("\\\n", " ").splitlines()
                if line.strip().startswith("keras-unet")}

    commands = set().union(*map(command_lines, re.findall(r"```bash\n(.*?)```", section, re.S)))
    assert len(commands) >= 7
    guides = set().union(*(command_lines(b.code) for page in all_pages() for b in blocks(page)
                           if b.language == "bash"))
    assert not sorted(commands - guides), "README commands that no guide page has"
    (keras_example,) = re.findall(r"```python\n(.*?)```", section, re.S)
    assert keras_example in [b.code for b in blocks("guides/models.md")]


def deploy_snippets() -> list[str]:
    return [b.code for b in blocks("guides/deployment.md") if b.language == "python"]


@pytest.mark.parametrize("runtime, index", [("litert", 0), ("mediapipe", 1),
                                            ("tflite_support", 2)])
def test_the_deploy_snippets_give_predicts_mask(model, held_out, tmp_path, runtime, index):
    """Each runtime's snippet, on a greyscale PNG of the model's size (which
    the snippets convert to RGB), gives `keras-unet predict`'s class mask."""
    names, verification, _ = held_out
    export_tflite(model, tmp_path / "exported" / "model_float32.tflite", names=names,
                  verification_images=verification, input_size=(128, 128), latency_runs=0)
    grey = np.round(verification[0].mean(-1) * 255).astype(np.uint8)
    PIL.Image.fromarray(grey).save(tmp_path / "image.png")
    python = sys.executable if runtime == "litert" else str(oracle_python(runtime))
    code = deploy_snippets()[index] + (
        "\nimport json\nnp.save('mask.npy', np.asarray(mask).reshape(128, 128))\n"
        "print(json.dumps(list(labels)))\n")
    result = subprocess.run([python, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == names
    predict_files(load_predictor(tmp_path / "exported" / "model_float32.tflite"),
                  tmp_path / "image.png", tmp_path / "predicted")
    ours = np.asarray(PIL.Image.open(tmp_path / "predicted" / "masks" / "image.png"))
    assert (np.load(tmp_path / "mask.npy") == ours).mean() >= 0.9999


def test_the_docs_build_strictly(tmp_path):
    """`mkdocs build --strict`: no broken link or anchor, no page outside the
    navigation, no docstring that documents a parameter the code lacks."""
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mkdocs not installed (pip install -e '.[docs]')")
    result = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict",
                             "--site-dir", str(tmp_path / "site")], cwd=REPO,
                            capture_output=True, text=True, timeout=600,
                            env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "index.html").is_file()
