"""Predicted / measured peak training memory for each method, over several runs each.

Usage: python bench/memory_prediction.py [--model smollm2-135m-instruct] [--steps 4] [--runs 3]
                                         [--malloc both|default|fixed] [--seconds 3600] [METHOD ...]
README figures: python bench/memory_prediction.py --runs 3 --seconds 3600

Each method trains a few steps in its own process (peak memory is per process). Measured: the
process's peak resident memory minus its resident memory after imports, before the model loads
(the libraries are not what the Calculator predicts). On a CUDA machine: torch's max allocated.
Predicted: the Calculator's weights + trainable weights + gradients + optimizer + activations at the
same batch, sequence length and precision. Goal: the ratio within 0.75 .. 1.25.

On CPU each method runs with glibc's default allocator settings (what the app does), and with
MALLOC_MMAP_THRESHOLD_=131072, which makes every tensor over 128 KiB its own mapping, returned to the
system when freed. By default glibc raises that threshold as large blocks are freed, so freed activations
stay in its heap: the difference between the two columns is allocator caching, not tensors the Calculator
missed. The fixed threshold is not the app's default: measured with bench/train_throughput.py, it cut the
training throughput by about 40% (page faults on every fresh mapping).

Memory varies far less than time, and each sample is a whole process, so the bench runs ``--runs`` rounds
(at least 3 for a verdict) rather than the 6 a 95% interval needs, every method and setting once per round in
rotating order (bench/measure.py). Each figure is the median ratio and its range (min .. max) over the runs;
the A/A resolution is the range of the same method's measured peak over its runs, relative to its median.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import measure  # noqa: E402

FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}
SETTINGS = {"default": None, "fixed": FIXED_MMAP_THRESHOLD}
GOAL = measure.within(0.75, 1.25)
MIB = 1024 ** 2


def measure_one(model: str, method: str, steps: int) -> dict:
    import resource
    import tempfile
    import warnings
    from pathlib import Path

    warnings.filterwarnings("ignore")
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from explorer.train import loop as training
    from explorer.train.config import TrainConfig

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cfg = TrainConfig(model=model, method=method, steps=steps, eval_examples=0, eval_every=10 ** 6,
                      score_base=False)
    with tempfile.TemporaryDirectory() as folder:
        summary = training.train(cfg, {}, Path(folder))
    measured = summary["peak_memory_bytes"] - (baseline if summary.get("peak_memory_bytes") else 0)
    return {"method": method, "predicted": summary["predicted_peak_bytes"], "measured": measured,
            "baseline": baseline, "peak_rss": summary["peak_memory_bytes"]}


def measure_in_subprocess(model: str, method: str, steps: int, env_extra: dict | None):
    """One method in a fresh process (peak memory is per process): its result, or the error's last line."""
    env = dict(os.environ, **(env_extra or {}))
    out = subprocess.run([sys.executable, __file__, "--one", method, "--model", model, "--steps", str(steps)],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    if out.returncode:
        return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def sampler(model: str, method: str, steps: int, env_extra: dict | None, runs: list, errors: dict):
    """A variant for measure.interleave: one subprocess, its measured bytes (nan once it has failed)."""
    def run() -> float:
        if method in errors:
            return math.nan
        result = measure_in_subprocess(model, method, steps, env_extra)
        if isinstance(result, str):
            errors[method] = result
            return math.nan
        runs.append(result)
        return float(result["measured"])
    return run


def figure(name: str, results: list[dict]) -> measure.Figure:
    ratios = measure.spread([r["predicted"] / r["measured"] for r in results])
    noise = measure.spread([r["measured"] for r in results]).relative_half_width()
    return measure.Figure(name, ratios, None if math.isinf(noise) else noise, GOAL, fmt="{:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", help="methods to measure (default: all)")
    parser.add_argument("--model", default=None, help="model to train (default: the bundled SmolLM2)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="runs per method and setting (3 or more for a verdict)")
    parser.add_argument("--malloc", choices=("both", "default", "fixed"), default="both",
                        help="glibc's default allocator settings, the fixed mmap threshold, or both")
    parser.add_argument("--seconds", type=float, default=3600.0, help="time cap: no new round past it")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process: one method
    args = parser.parse_args(argv)
    from explorer.models import provision

    model = args.model or provision.BUNDLED_NAME
    if args.one:
        print(json.dumps(measure_one(model, args.one, args.steps)))
        return
    from explorer.methods import METHODS

    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"Unknown method {', '.join(unknown)}: choose from {', '.join(METHODS)}.")
    methods = args.methods or list(METHODS)
    settings = ["default", "fixed"] if args.malloc == "both" else [args.malloc]
    results = {(m, s): [] for m in methods for s in settings}
    errors = {s: {} for s in settings}
    print(f"model {model}, {args.steps} steps, {args.runs} runs of each method and setting "
          f"({', '.join(settings)} allocator), one process each, in rotating order", flush=True)
    rounds = measure.interleave(
        {f"{m}/{s}": sampler(model, m, args.steps, SETTINGS[s], results[m, s], errors[s])
         for m in methods for s in settings},
        seconds=args.seconds, warmup=0, max_rounds=args.runs,
        progress=lambda r: print(f"  round {r.count} done", flush=True))
    print(f"{'method':<8} {'setting':<8} {'predicted':>9} {'measured median (range)':>26} {'ratio median (range)':>22}"
          "   MiB; measured = peak RSS - RSS after imports")
    figures = []
    for method in methods:
        for setting in settings:
            done, error = results[method, setting], errors[setting].get(method)
            if not done:
                print(f"{method:<8} {setting:<8} failed: {error}")
                continue
            mib, ratios = [r["measured"] / MIB for r in done], [r["predicted"] / r["measured"] for r in done]
            print(f"{method:<8} {setting:<8} {done[0]['predicted'] / MIB:>9.0f} "
                  f"{f'{statistics.median(mib):.0f} ({min(mib):.0f} .. {max(mib):.0f})':>26} "
                  f"{f'{statistics.median(ratios):.2f} ({min(ratios):.2f} .. {max(ratios):.2f})':>22}"
                  + (f"   then failed: {error}" if error else ""))
            fig = figure(f"{method} ({setting} allocator): predicted / measured", done)
            figures.append(fig)
    print(measure.final_block("memory_prediction: predicted / measured peak training memory", figures,
                              f"{rounds.describe()}; resolution: the same method's measured peak over its runs"))


if __name__ == "__main__":
    main()
