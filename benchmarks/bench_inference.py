"""Inference side by side: LiteRT against ONNX Runtime, and large images.

1. Single-image latency of one model exported at two input sizes (256x256
   and 480x360, padded to the model's size multiple: 480x368) as LiteRT
   float32, float16 and int8, and as ONNX run by ONNX Runtime in float32 and
   after its dynamic int8 quantization (`quantize_dynamic`), all with the
   same thread count; cases interleaved round after round, the median of
   each case's runs, and the ratio of each LiteRT precision to ONNX
   Runtime's nearest one. One more ONNX Runtime float32 row runs without
   its NCHWc layout transform (graph optimizations "extended", not "all"):
   the blocked-layout direct convolutions of its MLAS library are what put
   it ahead of LiteRT's XNNPACK in float32 on AVX-512 CPUs. One more
   LiteRT float32 row converts the model without the export's rewrite of
   its up-convolutions (`keras_unet.export.graph`: `TRANSPOSE_CONV` kept),
   to show what the rewrite buys.
2. A 4096x4096 image predicted by 256x256 tiles (`predict_image`, the
   `predict` command's path) with the `.keras` and the `.tflite` float32 and
   int8 models, against the `.keras` model on the whole image at once: wall
   time, megapixels per second and peak resident memory, each case in its
   own process (peak memory is per process).

The model is the bundled `nuclei_dsb2018` (16 filters, depth 4, per-image
normalization), calibrated and verified on the bundled sample.

    python benchmarks/bench_inference.py [--threads 2] [--runs 30] [--rounds 3]
"""

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, quiet_tensorflow, save, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "nuclei_dsb2018"
SIZES = {"256x256": (256, 256), "480x360": (368, 480)}  # (height, width), 360 -> 368
LARGE = 4096


def export_models(folder: Path, threads: int) -> dict:
    """`{size: {case: path}}` of the exported models."""
    import keras
    import tensorflow as tf
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from keras_unet import labelme_to_masks
    from keras_unet.export import export_run, fixed_size_model
    from keras_unet.models import pretrained

    data = folder / "data"
    labelme_to_masks(REPO / "datasets" / "nuclei", data)
    model = keras.models.load_model(pretrained.model_path(MODEL), compile=False)
    models = {}
    for name, size in SIZES.items():
        out = folder / name
        export_run(MODEL, out, data=data, precisions=("float32", "float16", "int8"),
                   formats=("onnx",), input_size=size, num_threads=threads, latency_runs=0)
        quantize_dynamic(str(out / "model.onnx"), str(out / "model_dynamic_int8.onnx"),
                         weight_type=QuantType.QInt8)
        unrewritten = out / "model_float32_transpose_conv.tflite"
        with contextlib.redirect_stdout(io.StringIO()):  # the converter's signature dump
            unrewritten.write_bytes(tf.lite.TFLiteConverter.from_keras_model(
                fixed_size_model(model, size)).convert())
        models[name] = {
            **{f"litert {p}": out / f"model_{p}.tflite" for p in ("float32", "float16", "int8")},
            "litert float32 TRANSPOSE_CONV": unrewritten,
            "onnxruntime float32": out / "model.onnx",
            "onnxruntime float32 no NCHWc": out / "model.onnx",
            "onnxruntime dynamic int8": out / "model_dynamic_int8.onnx",
        }
    return models


def runner(path: Path, threads: int, nchwc: bool = True):
    """`(fn(batch), input)` for a `.tflite` or `.onnx` file (`nchwc`: ONNX
    Runtime's full graph optimizations, its default)."""
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

        def run(x):
            interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
            interpreter.invoke()
            return interpreter.get_tensor(out["index"])

        return run, tuple(inp["shape"])
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: not its notice on tf2onnx's Resize
    if not nchwc:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = tuple(d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape)
    return (lambda x: session.run(None, {name: x.astype(np.float32)})[0]), shape


def latencies(models: dict, threads: int, runs: int, rounds: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for size, cases in models.items():
        loaded = {case: runner(path, threads, nchwc="no NCHWc" not in case)
                  for case, path in cases.items()}
        times = {case: [] for case in cases}
        for round_ in range(rounds):
            order = list(cases) if round_ % 2 == 0 else list(reversed(cases))
            for case in order:
                run, shape = loaded[case]
                x = rng.random(shape, np.float32)
                for _ in range(3):
                    run(x)
                for _ in range(runs):
                    start = time.perf_counter()
                    run(x)
                    times[case].append((time.perf_counter() - start) * 1e3)
        ort32 = median(times["onnxruntime float32"])
        ort8 = median(times["onnxruntime dynamic int8"])
        for case, values in times.items():
            ms = median(values)
            versus = ort8 if "int8" in case else ort32
            rows.append({"size": size, "case": case, "ms": round(ms, 2),
                         "MB": round(cases[case].stat().st_size / 1e6, 2),
                         "vs onnxruntime": round(ms / versus, 2)})
    return rows


def large_image_case(case: str, folder: Path, threads: int) -> dict:
    """One large-image case, in this process: seconds, MP/s, peak memory."""
    quiet_tensorflow()
    from keras_unet.inference.predict import load_predictor, predict_image

    image = np.random.default_rng(0).random((LARGE, LARGE, 3), np.float32) * 0.2
    source = {"keras tiles 256": MODEL, "keras whole image": MODEL,
              "litert float32 tiles 256": folder / "256x256" / "model_float32.tflite",
              "litert int8 tiles 256": folder / "256x256" / "model_int8.tflite"}[case]
    predictor = load_predictor(source, num_threads=threads)
    tile = None if case == "keras whole image" else (256, 256)
    start = time.perf_counter()
    probabilities = predict_image(predictor, image, tile=tile)
    seconds = time.perf_counter() - start
    assert probabilities.shape[:2] == (LARGE, LARGE)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    return {"case": case, "seconds": round(seconds, 1),
            "MP/s": round(LARGE * LARGE / 1e6 / seconds, 2), "peak MiB": round(peak)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--large-case", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.large_case:
        print(json.dumps(large_image_case(args.large_case, Path(args.folder), args.threads)))
        return

    quiet_tensorflow()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = export_models(folder, args.threads)
        rows = latencies(models, args.threads, args.runs, args.rounds)
        print(table(rows, ["size", "case", "ms", "MB", "vs onnxruntime"]))
        large = []
        for case in ("keras tiles 256", "keras whole image", "litert float32 tiles 256",
                     "litert int8 tiles 256"):
            result = subprocess.run(
                [sys.executable, __file__, "--large-case", case, "--folder", str(folder),
                 "--threads", str(args.threads)], capture_output=True, text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            if result.returncode != 0:
                large.append({"case": case, "seconds": "failed",
                              "error": result.stderr.strip().splitlines()[-1][:200]})
            else:
                large.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"{LARGE}x{LARGE}: {large[-1]}", flush=True)
    print()
    print(table(large, ["case", "seconds", "MP/s", "peak MiB"]))
    print(save("inference", {"model": MODEL, "threads": args.threads, "runs": args.runs,
                             "rounds": args.rounds, "latency": rows, "large_image": large}))


if __name__ == "__main__":
    main()
