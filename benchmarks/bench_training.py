"""Training throughput: input-pipeline overhead, a peer U-Net, achieved FLOP/s.

1. `fit()` fed by the full tf.data pipeline from files (decode, cache, joint
   augmentation, crop, batch, prefetch) vs `fit()` on the same number of
   tensors already in memory: images/s, same model, alternating runs.
2. Training-step throughput of `build_unet` vs keras-unet-collection's
   `unet_2d` with the same widths, input size and batch (if installed:
   `pip install --no-deps keras-unet-collection`; its import name differs,
   so it can share the environment).
3. Achieved FLOP/s of the training step (3x the forward convolution FLOPs,
   counted from the layer shapes) as a fraction of the machine's measured
   float32 matmul FLOP/s.
4. XLA (`jit_compile`) on this machine: the same model and batch, compiled
   with and without XLA, training steps interleaved; keras-unet's `auto`
   setting turns XLA on where this ratio shows it wins.

    python benchmarks/bench_training.py [--data runs/sample/data]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, quiet_tensorflow, save, table  # noqa: E402

quiet_tensorflow()
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_unet import DiceCELoss, build_unet  # noqa: E402
from keras_unet.data.pairs import load_dataset  # noqa: E402
from keras_unet.data.pipeline import make_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE, BATCH, FILTERS, DEPTH = 128, 8, 16, 4


def conv_flops(model, batch: int) -> float:
    """Forward FLOPs of the convolutions (2 per multiply-add) for one batch."""
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            k_h, k_w, c_in, c_out = layer.kernel.shape
            if isinstance(layer, keras.layers.Conv2DTranspose):
                _, h, w, _ = layer.input.shape  # each input pixel scatters a kernel
                total += 2.0 * k_h * k_w * c_in * c_out * h * w
            else:
                _, h, w, _ = layer.output.shape
                total += 2.0 * k_h * k_w * c_in * c_out * h * w
        elif hasattr(layer, "layers"):
            total += conv_flops(layer, 1)
    return total * batch


def matmul_flops_per_s(n: int = 2048, repeats: int = 10) -> float:
    a = tf.random.uniform((n, n))
    b = tf.random.uniform((n, n))
    run = tf.function(lambda: tf.matmul(a, b))
    run().numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        run().numpy()
    return 2.0 * n**3 * repeats / (time.perf_counter() - start)


def step_time(model, x, y, steps: int = 8) -> float:
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps


def compiled(model, jit_compile=False):
    model.compile(keras.optimizers.Adam(1e-3), DiceCELoss(), jit_compile=jit_compile)
    return model


def xla_ratio(x, y, repeats: int, steps: int = 8) -> dict:
    """Images/s of the same training step without and with XLA, interleaved.

    Also the first step's seconds (tracing, and XLA's compilation), which
    `auto` weighs against the per-step gain.
    """
    models, first = {}, {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        models[jit] = compiled(build_unet((SIZE, SIZE, 3), 1, filters=FILTERS, depth=DEPTH,
                                          normalization="batch"), jit_compile=jit)
        start = time.perf_counter()
        models[jit].train_on_batch(x, y)  # tracing / XLA compilation
        first[jit] = time.perf_counter() - start
    rates = {False: [], True: []}
    for _ in range(repeats):
        for jit, model in models.items():
            rates[jit].append(BATCH / step_time(model, x, y, steps))
    return {"without_xla": median(rates[False]), "with_xla": median(rates[True]),
            "ratio": median(rates[True]) / median(rates[False]),
            "first_step_s_without_xla": first[False], "first_step_s_with_xla": first[True]}


def ours():
    return compiled(build_unet((SIZE, SIZE, 3), 1, filters=FILTERS, depth=DEPTH,
                               normalization="batch"))


def peer():
    try:
        from keras_unet_collection import models
    except ImportError:
        return None
    widths = [FILTERS * 2**i for i in range(DEPTH + 1)]
    model = models.unet_2d((SIZE, SIZE, 3), widths, n_labels=1, stack_num_down=2,
                           stack_num_up=2, activation="ReLU", output_activation="Sigmoid",
                           batch_norm=True, pool="max", unpool=False, name="unet")
    return compiled(model)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO / "runs/sample/data"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    dataset = load_dataset(args.data)

    # 1. pipeline overhead
    model = ours()
    pipeline = make_dataset(dataset, channels=3, training=True, batch_size=BATCH,
                            crop_size=SIZE, pad_multiple=2**DEPTH).repeat()
    x, y = next(iter(pipeline))
    x = np.repeat(x.numpy(), args.steps, 0)
    y = np.repeat(y.numpy(), args.steps, 0)
    model.fit(pipeline, steps_per_epoch=2, epochs=1, verbose=0)  # trace + fill the cache
    model.fit(x[:BATCH * 2], y[:BATCH * 2], batch_size=BATCH, epochs=1, verbose=0)
    files_rate, memory_rate = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.fit(pipeline, steps_per_epoch=args.steps, epochs=1, verbose=0)
        files_rate.append(args.steps * BATCH / (time.perf_counter() - start))
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
        memory_rate.append(args.steps * BATCH / (time.perf_counter() - start))
    overhead = {"tf.data from files": median(files_rate), "in-memory tensors": median(memory_rate)}

    # 2. peer comparison and 3. FLOP/s
    xb, yb = x[:BATCH], y[:BATCH].astype("float32")
    rows = []
    flops_machine = matmul_flops_per_s()
    for name, factory in (("keras-unet build_unet", ours),
                          ("keras-unet-collection unet_2d", peer)):
        candidate = factory()
        if candidate is None:
            rows.append({"model": name, "note": "not installed"})
            continue
        seconds = median([step_time(candidate, xb, yb) for _ in range(args.repeats)])
        flops = 3 * conv_flops(candidate, BATCH)
        rows.append({"model": name, "params": candidate.count_params(),
                     "step_s": seconds, "images_per_s": BATCH / seconds,
                     "gflop_per_step": flops / 1e9,
                     "flops_fraction": flops / seconds / flops_machine})
    # 4. XLA
    xla = xla_ratio(xb, yb, args.repeats)
    feeds = [{"feed": k, "images_per_s": v} for k, v in overhead.items()]
    print(f"input pipeline: {table(feeds, ['feed', 'images_per_s'])}")
    ratio = overhead["tf.data from files"] / overhead["in-memory tensors"]
    print(f"pipeline/in-memory ratio: {ratio:.3f}\n")
    print(table(rows, ["model", "params", "step_s", "images_per_s", "gflop_per_step",
                       "flops_fraction", "note"]))
    peer_row = [r for r in rows if "step_s" in r]
    if len(peer_row) == 2:
        print(f"build_unet / unet_2d throughput: "
              f"{peer_row[0]['images_per_s'] / peer_row[1]['images_per_s']:.3f}")
    print(f"machine matmul: {flops_machine / 1e9:.1f} GFLOP/s on {os.cpu_count()} cores")
    print(f"XLA: {xla['without_xla']:.2f} images/s without, {xla['with_xla']:.2f} with: "
          f"{xla['ratio']:.2f}x; first step {xla['first_step_s_without_xla']:.1f} s without, "
          f"{xla['first_step_s_with_xla']:.1f} s with")
    print(save("training", {"pipeline": overhead, "pipeline_ratio": ratio, "models": rows,
                            "xla": xla,
                            "matmul_gflops": flops_machine / 1e9, "size": SIZE,
                            "batch": BATCH, "filters": FILTERS, "depth": DEPTH}))


if __name__ == "__main__":
    main()
