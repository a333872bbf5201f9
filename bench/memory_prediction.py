"""Predicted / measured peak training memory for each method on the bundled model.

Usage: python bench/memory_prediction.py [--steps 4] [METHOD ...]

Each method trains a few steps in its own process (peak memory is per process). Measured: the
process's peak resident memory minus its resident memory after imports, before the model loads
(the libraries are not what the Calculator predicts). On a CUDA machine: torch's max allocated.
Predicted: the Calculator's weights + trainable weights + gradients + optimizer + activations at the
same batch, sequence length and precision. Goal: the ratio within 0.75 .. 1.25.
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

    from explorer import provision, training

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cfg = training.TrainConfig(model=provision.BUNDLED_NAME, method=method, steps=steps, eval_examples=0,
                               eval_every=10 ** 6)
    with tempfile.TemporaryDirectory() as folder:
        summary = training.train(cfg, {"head_type": "lm"} if method == "head" else {}, Path(folder))
    measured = summary["peak_memory_bytes"] - (baseline if summary.get("peak_memory_bytes") else 0)
    return {"method": method, "predicted": summary["predicted_peak_bytes"], "measured": measured,
            "baseline": baseline, "peak_rss": summary["peak_memory_bytes"]}


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 4
    if "--one" in sys.argv:
        print(json.dumps(measure_one(args[0], steps)))
        return
    from explorer.methods import METHODS

    methods = [a for a in args if a in METHODS] or list(METHODS)
    print(f"{'method':<10} {'predicted':>12} {'measured':>12} {'ratio':>7}   (MiB; measured = peak RSS - RSS after imports)")
    for method in methods:
        out = subprocess.run([sys.executable, __file__, "--one", method, "--steps", str(steps)], cwd=ROOT,
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{method:<10} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mib = 1024 ** 2
        print(f"{method:<10} {r['predicted'] / mib:12.0f} {r['measured'] / mib:12.0f} {r['predicted'] / r['measured']:7.2f}")


if __name__ == "__main__":
    main()
