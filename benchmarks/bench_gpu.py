"""Training throughput on a GPU: `build_unet` on Keras-JAX against PyTorch.

For the GPU machine a session may be lent, which has JAX, PyTorch and CUDA
but no TensorFlow: `build_unet` runs there on the JAX backend
(`KERAS_BACKEND=jax`, keras-unet and Keras carried as wheels). The same
U-Net as `bench_torch.py` (16 or more filters, depth 4, batch norm, 2
classes, Adam, cross-entropy) at 256x256, batch 16:

- `build_unet` on JAX, float32 and `mixed_bfloat16` (XLA-compiled, as Keras
  compiles every JAX train step);
- the plain PyTorch U-Net, `channels_last`, eager float32, and
  `torch.compile` with `autocast` bfloat16.

Each case runs in its own process, the cases interleaved; images/s is the
median of the timed steps after warm-up (the device synchronized), and MFU
divides the achieved FLOP/s (PyTorch's `FlopCounterMode` count of one
training step) by the device's dense peak from `PEAKS` (by device name),
or by `--peak-tflops`. The whole run fits one 9-minute call with the
defaults; `--device cpu` runs it here, as a check that it works.

    KERAS_BACKEND=jax python benchmarks/bench_gpu.py [--filters 32] [--rounds 2]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_torch  # noqa: E402
from common import median, save, table  # noqa: E402

CASES = ["keras_jax_float32", "keras_jax_bfloat16", "torch_float32", "torch_compile_bf16"]
# Dense peaks in TFLOP/s (float32 without TF32, bfloat16 tensor cores), by a
# substring of the device name.
PEAKS = {"H200": (67.0, 989.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0),
         "L4": (30.3, 121.0), "T4": (8.1, 65.0)}


def keras_case(name, args) -> dict:
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras

    from keras_unet import build_unet

    if name.endswith("bfloat16"):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    device = jax.devices("gpu" if args.device == "gpu" else "cpu")[0]
    with jax.default_device(device):
        model = build_unet((args.size, args.size, 3), 2, filters=args.filters, depth=4,
                           normalization="batch")
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy())
        rng = np.random.default_rng(0)
        x = rng.random((args.batch, args.size, args.size, 3), np.float32)
        y = rng.integers(0, 2, (args.batch, args.size, args.size)).astype(np.int32)

        def step():
            loss = model.train_on_batch(x, y)
            float(loss)  # waits for the device

        seconds = bench_torch.timed_steps(step, args.warmup, args.steps)
    return {"seconds": seconds, "device": str(device)}


def torch_case(name, args) -> dict:
    import torch

    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    model = bench_torch.torch_unet(args.filters)
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.rand(args.batch, 3, args.size, args.size, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 2, (args.batch, args.size, args.size), device=device)
    bf16 = name.endswith("bf16")
    forward = torch.compile(model) if "compile" in name else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(forward(x).float(), y)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:  # eager model: the compiled one does the same arithmetic
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x).float(), y).backward()
    seconds = bench_torch.timed_steps(step, args.warmup, args.steps)
    name_ = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    return {"seconds": seconds, "device": name_, "flops": float(counter.get_total_flops())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, nargs=2, metavar=("FP32", "BF16"))
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case = keras_case if args.case.startswith("keras_") else torch_case
        print(json.dumps(case(args.case, args)))
        return
    forwarded = [f"--{k}={getattr(args, k)}" for k in
                 ("device", "filters", "size", "batch", "steps", "warmup")]
    results = {name: [] for name in args.cases}
    for round_ in range(args.rounds):
        for name in args.cases if round_ % 2 == 0 else list(reversed(args.cases)):
            run = subprocess.run([sys.executable, __file__, "--case", name, *forwarded],
                                 capture_output=True, text=True,
                                 env={**os.environ, "KERAS_BACKEND": "jax",
                                      "TF_CPP_MIN_LOG_LEVEL": "3"})
            if run.returncode != 0:
                raise RuntimeError(f"{name} failed:\n{run.stderr[-3000:]}")
            results[name].append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1}: {name} "
                  f"{args.batch / results[name][-1]['seconds']:.1f} images/s", flush=True)
    flops = next((r[0]["flops"] for r in results.values() if r and "flops" in r[0]), None)
    # PyTorch names the device model (JAX says only "cuda:0").
    device = next((r[0]["device"] for n, r in results.items() if r and n.startswith("torch")),
                  next(r[0]["device"] for r in results.values() if r))
    peaks = args.peak_tflops or next((p for key, p in PEAKS.items() if key in device), None)
    rows = []
    for name, runs in results.items():
        rate = median([args.batch / r["seconds"] for r in runs])
        peak = None if peaks is None else peaks[1 if "bf" in name else 0] * 1e12
        rows.append({"case": name, "images/s": f"{rate:.1f}",
                     "rounds": " ".join(f"{args.batch / r['seconds']:.1f}" for r in runs),
                     "MFU": f"{flops * rate / args.batch / peak:.1%}" if flops and peak else "-"})
    print(f"\n{device}; {args.filters} filters, {args.size}x{args.size}, batch {args.batch}; "
          f"{flops / 1e9 if flops else float('nan'):.1f} GFLOP per step\n")
    print(table(rows, ["case", "images/s", "rounds", "MFU"]))
    print(save(f"gpu_{args.device}", {"device": device, "filters": args.filters,
                                      "size": args.size, "batch": args.batch,
                                      "flops": flops, "results": results, "rows": rows}))


if __name__ == "__main__":
    main()
