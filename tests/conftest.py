"""Shared fixtures and settings for the keras-unet tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def run_python():
    """Runs code in a fresh interpreter and returns its stdout; fails the
    test, with the end of stderr, if the code fails."""
    def run(code: str) -> str:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    return run


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """`../shared/datasets` beside the checkout; skips where it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS} (a user's clone)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def nuclei_dataset(tmp_path_factory) -> Path:
    """The bundled LabelMe sample converted to a dataset folder (83 pairs, with instances)."""
    from keras_unet.convert import labelme_to_masks

    out = tmp_path_factory.mktemp("nuclei")
    summary = labelme_to_masks(REPO / "datasets" / "nuclei", out, instances=True, workers=2)
    assert not summary.errors
    return out


@pytest.fixture(scope="session")
def tiny_nuclei(nuclei_dataset, tmp_path_factory) -> Path:
    """Eight real nucleus image/mask/instance triples (the first, sorted by name)."""
    import shutil

    out = tmp_path_factory.mktemp("tiny_nuclei")
    shutil.copy(nuclei_dataset / "labels.txt", out / "labels.txt")
    for sub in ("images", "masks", "instances"):
        (out / sub).mkdir()
        for path in sorted((nuclei_dataset / sub).glob("*.png"))[:8]:
            shutil.copy(path, out / sub / path.name)
    return out
