"""Backbones for phones: size, FLOPs, TFLite size and LiteRT latency at 256x256.

For each `build_unet(backbone=...)` (1 class, decoder `filters=16`, random
weights: no download here): parameters, FLOPs per image (TensorFlow
profiler on the traced forward pass), `.tflite` float32 and int8 file sizes
(int8 calibrated on real nucleus crops), and the median single-image LiteRT
latency on this CPU. Mask agreement with Keras is measured and printed, but
with untrained weights it says little, so it is not enforced here (the
export tests enforce it on trained models).

    python benchmarks/bench_backbones.py [--backbones mobilenet_v2 resnet50] [--threads 2]
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow, save, table  # noqa: E402

quiet_tensorflow()
import tensorflow as tf  # noqa: E402

from keras_unet import build_unet  # noqa: E402
from keras_unet.export import export_tflite, image_windows  # noqa: E402
from keras_unet.models.backbones import BACKBONES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def forward_flops(model, size: int) -> float:
    """Float operations of one forward pass (TF profiler on the graph)."""
    spec = tf.TensorSpec((1, size, size, model.input_shape[-1]), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    images = sorted(str(p) for p in (REPO / "datasets" / "nuclei").glob("*.png"))
    window = (args.size, args.size)
    verification = image_windows(images[:8], window, 3, limit=8)
    calibration = image_windows(images, window, 3, limit=32, random_crops=True)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for name in ["unet (no backbone, filters=16)", *args.backbones]:
            backbone = None if name.startswith("unet") else name
            model = build_unet((args.size, args.size, 3), 1, filters=16, backbone=backbone,
                               normalization="batch")
            row = {"backbone": name, "params_M": model.count_params() / 1e6,
                   "GFLOPs": forward_flops(model, args.size) / 1e9}
            for precision in ("float32", "int8"):
                report = export_tflite(
                    model, Path(out) / f"{name[:12]}_{precision}.tflite", names=["bg", "fg"],
                    verification_images=verification, precision=precision, input_size=window,
                    representative=(x[None] for x in calibration), min_agreement=0.0,
                    num_threads=args.threads, latency_runs=args.runs,
                )
                row[f"{precision}_MB"] = report.size_bytes / 1e6
                row[f"{precision}_ms"] = report.latency_ms["tflite"]
                row[f"{precision}_agree"] = report.agreement.mask_agreement
            rows.append(row)
            print(table([row], list(row)), flush=True)
    columns = ["backbone", "params_M", "GFLOPs", "float32_MB", "int8_MB", "float32_ms",
               "int8_ms", "int8_agree"]
    print(table(rows, columns))
    print(save("backbones", {"rows": rows, "size": args.size, "threads": args.threads}))


if __name__ == "__main__":
    main()
