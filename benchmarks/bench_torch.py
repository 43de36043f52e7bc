"""Training throughput against what a PyTorch user would run on the same CPU.

The same U-Net (16 filters, depth 4, batch norm, 2x2 transposed-convolution
upsampling, 2 classes, softmax cross-entropy, Adam) trained on 128x128x3
images in batches of 8, as

- `build_unet` on the TensorFlow backend, float32 and `mixed_bfloat16`;
- the same network written in plain PyTorch, in PyTorch's default layout
  (NCHW), in `channels_last`, and `channels_last` under
  `torch.autocast("cpu", torch.bfloat16)`;
- segmentation_models.pytorch's `Unet` with a ResNet-18 encoder (random
  weights; decoder widths 128..16), where it is installed. It needs
  torchvision, which has no CPU build for every PyTorch release: the
  PyTorch cases can run in another environment (`--torch-python`).

Each case runs in its own process (a fresh framework, its default thread
settings), the cases interleaved round after round; a case's figure is the
median step time of its timed steps after warm-up. The table gives images/s
per round, their median, the ratio to the best PyTorch float32 case, the
FLOPs of one training step (counted by `torch.utils.flop_counter` for the
PyTorch models; for `build_unet`, 3x the forward convolution FLOPs from the
layer shapes, which the plain PyTorch U-Net's count checks), and the achieved
fraction of the CPU's peak: cores x clock x FMA units x (vector bits / 32)
x 2 for float32; for bfloat16, cores x clock x 1024 on CPUs with AMX (Intel's
figure for its tile unit), else twice the float32 peak with AVX512_BF16.

    python benchmarks/bench_torch.py [--rounds 4] [--steps 15] [--fma-units 2]
    python benchmarks/bench_torch.py --torch-python .venv-smp/bin/python
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save, table  # noqa: E402

SIZE, BATCH, FILTERS, DEPTH, CLASSES = 128, 8, 16, 4, 2
CASES = ["keras_float32", "keras_bfloat16", "torch_nchw", "torch_channels_last",
         "torch_channels_last_bf16", "smp_unet_resnet18"]
TORCH_FLOAT32 = ("torch_nchw", "torch_channels_last")
AMX_BF16_FLOPS_PER_CYCLE = 1024
BF16_UNIT = {(True, True): "AMX", (True, False): "AMX", (False, True): "AVX512_BF16",
             (False, False): "no bfloat16 unit"}


def timed_steps(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return median(times)


def keras_case(name: str, warmup: int, steps: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from keras_unet import build_unet

    if name == "keras_bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_unet((SIZE, SIZE, 3), CLASSES, filters=FILTERS, depth=DEPTH,
                       normalization="batch")
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(),
                  jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, SIZE, SIZE, 3), np.float32)
    y = rng.integers(0, CLASSES, (BATCH, SIZE, SIZE)).astype(np.int32)
    seconds = timed_steps(lambda: model.train_on_batch(x, y), warmup, steps)
    return {"seconds": seconds, "params": model.count_params(),
            "flops": 3 * forward_conv_flops(model), "version": f"Keras {keras.__version__}"}


def forward_conv_flops(model) -> float:
    """Forward FLOPs of a Keras model's convolutions (2 per multiply-add)."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            k_h, k_w, c_out, c_in = layer.kernel.shape
            _, h, w, _ = layer.input.shape  # each input pixel scatters a kernel
            total += 2.0 * k_h * k_w * c_in * c_out * h * w
        elif isinstance(layer, keras.layers.Conv2D):
            k_h, k_w, c_in, c_out = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2.0 * k_h * k_w * c_in * c_out * h * w
    return total * BATCH


def torch_unet(filters: int = FILTERS):
    """The network of `build_unet(filters=filters, depth=4, normalization="batch")`."""
    from torch import nn

    def double_conv(c_in, c_out):
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [filters * 2**i for i in range(DEPTH + 1)]
            self.down = nn.ModuleList(double_conv(c_in, c_out) for c_in, c_out
                                      in zip([3] + widths[:-2], widths[:-1]))
            self.bottom = double_conv(widths[-2], widths[-1])
            self.up = nn.ModuleList(nn.ConvTranspose2d(w, w // 2, 2, stride=2)
                                    for w in reversed(widths[1:]))
            self.dec = nn.ModuleList(double_conv(w, w // 2) for w in reversed(widths[1:]))
            self.head = nn.Conv2d(filters, CLASSES, 1)

        def forward(self, x):
            import torch

            skips = []
            for block in self.down:
                x = block(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.bottom(x)
            for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
                x = dec(torch.cat([skip, up(x)], 1))
            return self.head(x)

    return UNet()


def torch_case(name: str, warmup: int, steps: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    if name.startswith("smp_"):
        import segmentation_models_pytorch as smp

        model = smp.Unet("resnet18", encoder_weights=None, classes=CLASSES,
                         decoder_channels=(128, 64, 32, 16, 16))
    else:
        model = torch_unet()
    layout = torch.channels_last if "channels_last" in name or name.startswith("smp_") \
        else torch.contiguous_format
    model = model.to(memory_format=layout).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.rand(BATCH, 3, SIZE, SIZE).contiguous(memory_format=layout)
    y = torch.randint(0, CLASSES, (BATCH, SIZE, SIZE))
    bf16 = name.endswith("_bf16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    seconds = timed_steps(step, warmup, steps)
    return {"seconds": seconds, "params": sum(p.numel() for p in model.parameters()),
            "flops": float(counter.get_total_flops()), "version": f"PyTorch {torch.__version__}"}


def run_case(name: str, warmup: int, steps: int, python: str = sys.executable) -> dict | None:
    """One case in a fresh process of interpreter `python`; `None` where its
    library is missing."""
    result = subprocess.run([python, __file__, "--case", name, "--warmup", str(warmup),
                             "--steps", str(steps)], capture_output=True, text=True)
    if result.returncode != 0:
        if "ModuleNotFoundError" in result.stderr:
            return None
        raise RuntimeError(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cpu_peak(fma_units: int) -> dict:
    """Peak FLOP/s of this machine's cores from /proc/cpuinfo and the ISA."""
    info = Path("/proc/cpuinfo").read_text()
    flags = set(re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split())
    mhz = float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M).group(1))
    cores = len(os.sched_getaffinity(0))
    bits = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    fp32 = cores * mhz * 1e6 * fma_units * (bits // 32) * 2
    if "amx_bf16" in flags:  # Intel's AMX tile unit: 1024 bfloat16 FLOPs per cycle and core
        bf16 = cores * mhz * 1e6 * AMX_BF16_FLOPS_PER_CYCLE
    else:  # AVX512_BF16 dot products: twice the float32 lanes
        bf16 = 2 * fp32 if "avx512_bf16" in flags else fp32
    return {"model": re.search(r"^model name\s*:\s*(.*)$", info, re.M).group(1).strip(),
            "cores": cores, "mhz": mhz, "vector_bits": bits, "fma_units": fma_units,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "fp32_peak": fp32, "bf16_peak": bf16}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--fma-units", type=int, default=2,
                        help="FMA units per core (2 on Xeon Gold/Platinum and EPYC Zen 4+)")
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--torch-python", default=sys.executable, metavar="PYTHON",
                        help="the interpreter of the PyTorch cases (an environment with "
                             "segmentation_models.pytorch; default: this one)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case = keras_case if args.case.startswith("keras_") else torch_case
        print(json.dumps(case(args.case, args.warmup, args.steps)))
        return

    peak = cpu_peak(args.fma_units)
    results = {name: [] for name in args.cases}
    for round_ in range(args.rounds):
        order = args.cases if round_ % 2 == 0 else list(reversed(args.cases))
        for name in order:
            python = sys.executable if name.startswith("keras_") else args.torch_python
            outcome = run_case(name, args.warmup, args.steps, python)
            if outcome is not None:
                results[name].append(outcome)
            print(f"round {round_ + 1}: {name} "
                  + (f"{BATCH / outcome['seconds']:.1f} images/s" if outcome else "not installed"),
                  flush=True)
    rates = {n: [BATCH / r["seconds"] for r in rs] for n, rs in results.items() if rs}
    best_torch = max((median(rates[n]) for n in TORCH_FLOAT32 if n in rates), default=None)
    rows = []
    for name, rs in results.items():
        if not rs:
            rows.append({"case": name, "images/s": "not installed"})
            continue
        rate = median(rates[name])
        flops = rs[0]["flops"]
        bf16 = "bf16" in name or "bfloat16" in name
        peak_flops = peak["bf16_peak"] if bf16 else peak["fp32_peak"]
        rows.append({
            "case": name,
            "images/s": f"{rate:.1f}",
            "rounds": " ".join(f"{r:.1f}" for r in rates[name]),
            "vs best torch fp32": f"{rate / best_torch:.2f}" if best_torch else "-",
            "params": f"{rs[0]['params'] / 1e6:.2f} M",
            "GFLOP/step": f"{flops / 1e9:.1f}",
            "version": rs[0].get("version", "-"),
            "of peak": f"{flops * rate / BATCH / peak_flops:.1%}",
        })
    print(f"\n{peak['model']}, {peak['cores']} cores at {peak['mhz']:.0f} MHz, "
          f"{peak['vector_bits']}-bit vectors x {peak['fma_units']} FMA: peak float32 "
          f"{peak['fp32_peak'] / 1e9:.0f} GFLOP/s, bfloat16 {peak['bf16_peak'] / 1e9:.0f} "
          f"GFLOP/s ({BF16_UNIT[peak['amx_bf16'], peak['avx512_bf16']]})\n")
    print(table(rows, ["case", "images/s", "rounds", "vs best torch fp32", "params",
                       "GFLOP/step", "of peak", "version"]))
    path = save("torch", {"cpu": peak, "size": SIZE, "batch": BATCH, "filters": FILTERS,
                          "depth": DEPTH, "steps": args.steps, "results": results,
                          "rows": rows})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
