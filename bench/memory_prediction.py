"""Predicted / measured peak memory of a training process for each chat method, over several runs each.

Usage: python bench/memory_prediction.py [--model smollm2-135m-instruct] [--steps 20] [--runs 3] [--light]
                                         [--malloc both|default|fixed] [--seconds 3600] [METHOD ...]
README figures: python bench/memory_prediction.py --runs 3 --malloc default --seconds 14400 (every chat method,
about 4-5 hours on a quiet 2-core machine; naming full head lora dora qlora ia3 prompt, the default race's, ~1.5 h)

Each method trains at the Fine-tune tab's default settings (--steps of them; --light skips the base's scoring
and every generated reply, for a quick look) in its own process (peak memory is per process). Measured:
the run's "peak_memory_bytes", the process's peak resident memory from just before the first step to the end
of the scoring after training (on a CUDA machine: torch's max allocated). Predicted: the run's
"peak_memory_predicted_bytes", the Calculator's weights + trainable weights + gradients + optimizer +
activations at the same batch, sequence length and precision, plus the CPU terms (AdamW's per-tensor
temporaries, LoRA's full-width dropout masks) and the runtime baseline the run measured
as training started: resident memory less the model's tensors (explorer.train.process_memory; 0 on CUDA). Goal: the ratio within 0.85 .. 1.15
on the bundled model, 0.75 .. 1.25 on any other.

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
TIGHT, WIDE = measure.within(0.85, 1.15), measure.within(0.75, 1.25)
MIB = 1024 ** 2


def goal_for(model: str):
    from explorer.models import provision

    return TIGHT if model == provision.BUNDLED_NAME else WIDE


def chat_methods() -> list[str]:
    """The registry's methods that train a chat model at their default options (a head for labels does not)."""
    from explorer.methods import METHODS

    return [name for name, m in METHODS.items() if m.data_kind(m.parse_options({})) == "chat"]


def measure_one(model: str, method: str, steps: int, light: bool) -> dict:
    import tempfile
    import warnings
    from pathlib import Path

    warnings.filterwarnings("ignore")
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from explorer.train import loop as training
    from explorer.train.config import TrainConfig

    quick = dict(eval_examples=0, probe_examples=0, score_base=False, watch_every=0) if light else {}
    cfg = TrainConfig(model=model, method=method, steps=steps, **quick)
    with tempfile.TemporaryDirectory() as folder:
        summary = training.train(cfg, {}, Path(folder))
    return {"method": method, "predicted": summary["peak_memory_predicted_bytes"],
            "measured": summary["peak_memory_bytes"], "baseline": summary["runtime_baseline_bytes"]}


def measure_in_subprocess(model: str, method: str, steps: int, light: bool, env_extra: dict | None):
    """One method in a fresh process (peak memory is per process): its result, or the error's last line."""
    env = dict(os.environ, **(env_extra or {}))
    out = subprocess.run([sys.executable, __file__, "--one", method, "--model", model, "--steps", str(steps)]
                         + (["--light"] if light else []), cwd=ROOT, capture_output=True, text=True, env=env)
    if out.returncode:
        return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def sampler(model: str, method: str, steps: int, light: bool, env_extra: dict | None, runs: list, errors: dict):
    """A variant for measure.interleave: one subprocess, its measured bytes (nan once it has failed)."""
    def run() -> float:
        if method in errors:
            return math.nan
        result = measure_in_subprocess(model, method, steps, light, env_extra)
        if isinstance(result, str):
            errors[method] = result
            return math.nan
        runs.append(result)
        return float(result["measured"])
    return run


def figure(name: str, results: list[dict], goal) -> measure.Figure:
    ratios = measure.spread([r["predicted"] / r["measured"] for r in results])
    noise = measure.spread([r["measured"] for r in results]).relative_half_width()
    return measure.Figure(name, ratios, None if math.isinf(noise) else noise, goal, fmt="{:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", help="methods to measure (default: every chat method)")
    parser.add_argument("--model", default=None, help="model to train (default: the bundled SmolLM2)")
    parser.add_argument("--steps", type=int, default=20, help="training steps (the Fine-tune tab's default: 20)")
    parser.add_argument("--light", action="store_true",
                        help="no base scoring, no generated task score, probe or watched replies")
    parser.add_argument("--runs", type=int, default=3, help="runs per method and setting (3 or more for a verdict)")
    parser.add_argument("--malloc", choices=("both", "default", "fixed"), default="both",
                        help="glibc's default allocator settings, the fixed mmap threshold, or both")
    parser.add_argument("--seconds", type=float, default=3600.0, help="time cap: no new round past it")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process: one method
    args = parser.parse_args(argv)
    from explorer.models import provision

    model = args.model or provision.BUNDLED_NAME
    if args.one:
        print(json.dumps(measure_one(model, args.one, args.steps, args.light)))
        return
    from explorer.methods import METHODS

    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"Unknown method {', '.join(unknown)}: choose from {', '.join(METHODS)}.")
    methods = args.methods or chat_methods()
    settings = ["default", "fixed"] if args.malloc == "both" else [args.malloc]
    results = {(m, s): [] for m in methods for s in settings}
    errors = {s: {} for s in settings}
    print(f"model {model}, {args.steps} steps{' (light)' if args.light else ''}, {args.runs} runs of each method and setting "
          f"({', '.join(settings)} allocator), one process each, in rotating order", flush=True)
    rounds = measure.interleave(
        {f"{m}/{s}": sampler(model, m, args.steps, args.light, SETTINGS[s], results[m, s], errors[s])
         for m in methods for s in settings},
        seconds=args.seconds, warmup=0, max_rounds=args.runs,
        progress=lambda r: print(f"  round {r.count} done", flush=True))
    print(f"{'method':<8} {'setting':<8} {'predicted':>9} {'measured median (range)':>26} {'ratio median (range)':>22}"
          "   MiB; measured: the process's peak; predicted: Calculator + CPU terms + runtime baseline")
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
            fig = figure(f"{method} ({setting} allocator): predicted / measured", done, goal_for(model))
            figures.append(fig)
    print(measure.final_block("memory_prediction: predicted / measured peak memory of the training process", figures,
                              f"{rounds.describe()}; resolution: the same method's measured peak over its runs"))


if __name__ == "__main__":
    main()
