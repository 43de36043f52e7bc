"""Runs the `portable` tests again under the JAX and PyTorch backends.

Keras picks its backend once per process, so each backend gets a pytest
subprocess with `KERAS_BACKEND` set. A backend that is not installed is
skipped with the command that installs it (CI installs both).
"""

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import REPO

PORTABLE_MODULES = ["tests/test_model.py", "tests/test_losses.py", "tests/test_metrics.py"]


@pytest.mark.parametrize("backend, module", [("jax", "jax"), ("torch", "torch")])
def test_portable_tests_pass_under_backend(backend, module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: pip install -e '.[backends]'")
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-m", "portable",
         "-p", "no:cacheprovider", *PORTABLE_MODULES],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
