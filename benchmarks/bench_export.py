"""TFLite size, latency and agreement for the bundled sample model.

Exports the main job's model (`runs/sample/run`, from `keras-unet`: the
last checkpoint, the one the main job scores and exports) at
float32, float16 and int8 in one run and measures, on the held-out
validation images: file size, single-image latency (median; Keras compiled
with tf.function, not eager; LiteRT interpreter), mask agreement with Keras,
and the foreground IoU of each model's masks against the ground truth.

    python benchmarks/bench_export.py [--run runs/sample/run] [--threads 2]
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow, save, table  # noqa: E402

quiet_tensorflow()
from keras_unet.data.instances import semantic_classes  # noqa: E402
from keras_unet.data.readers import read_image, read_mask  # noqa: E402
from keras_unet.evaluation.scores import confusion, per_class_scores  # noqa: E402
from keras_unet.export import export_run  # noqa: E402
from keras_unet.inference.predict import load_predictor, predict_image  # noqa: E402
from keras_unet.training.runs import RunFolder  # noqa: E402
from keras_unet.training.train import TrainConfig, load_training_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def truth_iou(predictor, dataset, channels) -> float:
    """Foreground IoU of a model's masks on the validation images."""
    matrix = np.zeros((2, 2), np.int64)
    for image_path, mask_path in zip(dataset.images, dataset.masks):
        probs = predict_image(predictor, read_image(image_path, channels))
        matrix += confusion(read_mask(mask_path, dataset.foreground_value),
                            semantic_classes(probs, predictor.target), 2)
    return per_class_scores(matrix, dataset.names)["classes"][dataset.names[1]]["iou"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(REPO / "runs/sample/run"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    run = Path(args.run)
    model = RunFolder(run).last  # the main job's model
    config = TrainConfig.from_file(run / "config.json")
    _, val_set = load_training_data(config)
    with tempfile.TemporaryDirectory() as out:
        reports = export_run(model, out, precisions=("float32", "float16", "int8"),
                             input_size=(args.size, args.size), num_threads=args.threads,
                             latency_runs=args.runs, verification_samples=len(val_set.images))
        keras_predictor = load_predictor(model)
        rows = [{"model": "keras (tf.function)", "size_MB": float("nan"),
                 "latency_ms": float(np.median([r.latency_ms["keras"] for r in reports])),
                 "mask_agreement": 1.0,
                 "val_fg_iou": truth_iou(keras_predictor, val_set, config.channels)}]
        for r in reports:
            predictor = load_predictor(r.path, num_threads=args.threads)
            rows.append({"model": f"tflite {r.precision}", "size_MB": r.size_bytes / 1e6,
                         "latency_ms": r.latency_ms["tflite"],
                         "mask_agreement": r.agreement.mask_agreement,
                         "val_fg_iou": truth_iou(predictor, val_set, config.channels)})
    print(table(rows, ["model", "size_MB", "latency_ms", "mask_agreement", "val_fg_iou"]))
    f32, i8 = rows[1], rows[3]
    summary = {
        "int8_size_ratio": i8["size_MB"] / f32["size_MB"],
        "int8_iou_drop_points": 100 * (f32["val_fg_iou"] - i8["val_fg_iou"]),
        "tflite_f32_vs_keras_latency": f32["latency_ms"] / rows[0]["latency_ms"],
    }
    print(", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    print(save("export", {"rows": rows, **summary, "input_size": args.size,
                          "threads": args.threads}))


if __name__ == "__main__":
    main()
