"""The README's Python example runs as written (a newcomer copies it first)."""

import re
import subprocess
import sys

from conftest import REPO


def test_the_keras_example_of_the_readme_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use the model in your own Keras code", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "unet.keras").is_file()
