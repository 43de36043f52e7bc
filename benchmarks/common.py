"""Shared helpers of the benchmark scripts: timing, tables, JSON results."""

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def quiet_tensorflow() -> None:
    """Loads TensorFlow with its notices and native logs silenced, as the
    `keras-unet` commands do (call before anything imports TensorFlow)."""
    from keras_unet.cli import quiet
    from keras_unet.logs import import_tensorflow_quietly

    quiet(verbose=False)
    import_tensorflow_quietly()


def timed(fn, repeats: int = 3) -> list[float]:
    """Wall times of `repeats` calls of `fn()` (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width table of dict rows."""
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def save(name: str, payload: dict) -> Path:
    """Writes `benchmarks/results/<name>.json` with machine facts added."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": {"cpu": platform.processor() or platform.machine(),
                           "python": platform.python_version()}, **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


def median(values) -> float:
    return float(np.median(values))


def parse_value(text: str):
    """`--set` values: JSON when it parses (numbers, booleans, lists), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def recipe_with(recipes: dict, name: str, settings: list[str]) -> dict:
    """Recipe `name` of `recipes` with `key=value` / `model.key=value` overrides."""
    recipe = copy.deepcopy(recipes[name])
    for item in settings:
        key, _, value = item.partition("=")
        if "." in key:
            section, sub = key.split(".", 1)
            recipe.setdefault(section, {})[sub] = parse_value(value)
        else:
            recipe[key] = parse_value(value)
    return recipe


def step_case_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a benchmark that times training steps, one case per process:
    `--rounds`, `--steps`, `--warmup`, and the hidden `--case A B ...` of a child."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    return parser


def step_case_arguments(doc: str) -> argparse.Namespace:
    """The parsed options of `step_case_parser`."""
    return step_case_parser(doc).parse_args()


def interleaved_cases(script: str, cases: list[tuple[str, ...]], args: argparse.Namespace,
                      env=None) -> dict:
    """Runs each case of `script` in its own process (`--case A B ...`), the
    cases interleaved round after round (reversed every other round).

    Args:
        script: The benchmark file, whose `--case` prints the seconds as JSON.
        cases: Tuples of the case's `--case` values.
        args: From `step_case_arguments`.
        env: `env(case) -> extra environment variables`, or `None`.

    Returns:
        `{case: [seconds per round]}`.
    """
    seconds = {c: [] for c in cases}
    for round_ in range(args.rounds):
        for case in cases if round_ % 2 == 0 else reversed(cases):
            result = subprocess.run(
                [sys.executable, script, "--case", *case, "--warmup", str(args.warmup),
                 "--steps", str(args.steps)], capture_output=True, text=True, check=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env(case) if env else {})})
            seconds[case].append(json.loads(result.stdout.splitlines()[-1]))
            print(f"round {round_ + 1}: {' '.join(case)} {seconds[case][-1] * 1e3:.0f} ms/step",
                  flush=True)
    return seconds
