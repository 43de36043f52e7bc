"""Model build time per Keras backend: Keras' He-normal vs keras-unet's NumPy one.

Under JAX, Keras' initializers compile their random function once per weight
shape, which dominates `build_unet`'s time; keras-unet draws the same
He-normal distribution with NumPy (`keras_unet.models.blocks.HeNormal`, the default).
Each build runs in a fresh process (nothing cached); the JAX persistent
compilation cache is measured too (a second process that finds the cache).

    python benchmarks/bench_build.py [--backends tensorflow jax torch]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

BUILD = """
import json, os, sys, time
if sys.argv[2]:
    import jax
    jax.config.update("jax_compilation_cache_dir", sys.argv[2])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
import keras
from keras_unet import build_unet
options = json.loads(sys.argv[1])
start = time.perf_counter()
build_unet((None, None, 3), 1, **options)
print(time.perf_counter() - start)
"""
MODELS = {
    "classic, 8 filters": {"filters": 8},
    "classic, 64 filters": {},
}


def build_seconds(backend: str, options: dict, cache: str = "") -> float:
    env = {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", BUILD, json.dumps(options), cache], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    args = parser.parse_args()
    rows = []
    for backend in args.backends:
        for model, options in MODELS.items():
            row = {"backend": backend, "model": model,
                   "keras_he_normal_s": build_seconds(
                       backend, {**options, "kernel_initializer":
                                 {"class_name": "HeNormal", "config": {}}}),
                   "keras_unet_he_normal_s": build_seconds(backend, options)}
            if backend == "jax":
                with tempfile.TemporaryDirectory() as cache:
                    keras_init = {**options, "kernel_initializer":
                                  {"class_name": "HeNormal", "config": {}}}
                    build_seconds(backend, keras_init, cache)
                    row["keras_he_normal_cached_s"] = build_seconds(backend, keras_init, cache)
            rows.append(row)
            print(row, flush=True)
    print(table(rows, ["backend", "model", "keras_he_normal_s", "keras_unet_he_normal_s",
                       "keras_he_normal_cached_s"]))
    print(save("build", {"rows": rows}))


if __name__ == "__main__":
    main()
