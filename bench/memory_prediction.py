"""Predicted / measured peak training memory for each method on the bundled model.

Usage: python bench/memory_prediction.py [--steps 4] [METHOD ...]

Each method trains a few steps in its own process (peak memory is per process). Measured: the
process's peak resident memory minus its resident memory after imports, before the model loads
(the libraries are not what the Calculator predicts). On a CUDA machine: torch's max allocated.
Predicted: the Calculator's weights + trainable weights + gradients + optimizer + activations at the
same batch, sequence length and precision. Goal: the ratio within 0.75 .. 1.25.

On CPU each method runs twice: with glibc's default allocator settings (what the app does), and with
MALLOC_MMAP_THRESHOLD_=131072, which makes every tensor over 128 KiB its own mapping, returned to the
system when freed. By default glibc raises that threshold as large blocks are freed, so freed activations
stay in its heap: the difference between the two columns is allocator caching, not tensors the Calculator
missed. The fixed threshold is not the app's default: measured with bench/train_throughput.py, it cut the
training throughput by about 40% (page faults on every fresh mapping).
"""

import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)


def measure_one(method: str, steps: int) -> dict:
    import resource
    import tempfile
    import warnings
    from pathlib import Path

    warnings.filterwarnings("ignore")
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from explorer.models import provision
    from explorer.train import loop as training
    from explorer.train.config import TrainConfig

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cfg = TrainConfig(model=provision.BUNDLED_NAME, method=method, steps=steps, eval_examples=0,
                               eval_every=10 ** 6)
    with tempfile.TemporaryDirectory() as folder:
        summary = training.train(cfg, {"head_type": "lm"} if method == "head" else {}, Path(folder))
    measured = summary["peak_memory_bytes"] - (baseline if summary.get("peak_memory_bytes") else 0)
    return {"method": method, "predicted": summary["predicted_peak_bytes"], "measured": measured,
            "baseline": baseline, "peak_rss": summary["peak_memory_bytes"]}


FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure_in_subprocess(method: str, steps: int, env_extra: dict | None):
    """One method in a fresh process (peak memory is per process): its result, or the error's last line."""
    env = dict(os.environ, **(env_extra or {}))
    out = subprocess.run([sys.executable, __file__, "--one", method, "--steps", str(steps)], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    if out.returncode:
        return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 4
    if "--one" in sys.argv:
        print(json.dumps(measure_one(args[0], steps)))
        return
    from explorer.methods import METHODS

    methods = [a for a in args if a in METHODS] or list(METHODS)
    print(f"{'method':<10} {'predicted':>12} {'measured':>12} {'ratio':>7} {'fixed threshold':>16} {'ratio':>7}"
          "   (MiB; measured = peak RSS - RSS after imports)")
    for method in methods:
        results = [measure_in_subprocess(method, steps, env) for env in (None, FIXED_MMAP_THRESHOLD)]
        if isinstance(results[0], str):
            print(f"{method:<10} failed: {results[0]}")
            continue
        r, tight = results
        mib = 1024 ** 2
        line = f"{method:<10} {r['predicted'] / mib:12.0f} {r['measured'] / mib:12.0f} {r['predicted'] / r['measured']:7.2f}"
        if isinstance(tight, dict):
            line += f" {tight['measured'] / mib:16.0f} {tight['predicted'] / tight['measured']:7.2f}"
        print(line)


if __name__ == "__main__":
    main()
