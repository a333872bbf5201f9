"""Inference latency of base, adapted (unmerged) and merged models, every method, measured in one run.

Usage: python bench/merge_overhead.py [--methods lora,dora,...] [--tokens 32] [--repeats 7]

For each method it trains a one-step run on the bundled SmolLM2 (the adapter's values do not change
its cost), then times greedy generation of the same prompt with the three variants in turn
(explorer.compare.measure_cost: median ms per token after a warm-up). Prints merged / base (goal:
within 3%) and adapted / base, beside the Calculator's FLOP overhead. Runs go to a temporary folder.
"""

import argparse
import os
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("EXPLORER_RUNS_DIR", tempfile.mkdtemp(prefix="bench-merge-"))
warnings.filterwarnings("ignore")

from explorer.compare import variants as compare  # noqa: E402
from explorer.methods import METHODS  # noqa: E402
from explorer.models import loaded as loaded_models, provision  # noqa: E402
from explorer.train import lifecycle  # noqa: E402
from explorer.train.config import TrainConfig  # noqa: E402


def one_step_run(method: str) -> str:
    options = {"head_type": "lm"} if method == "head" else {}
    config = TrainConfig(model=provision.BUNDLED_NAME, method=method, dataset="pirate", steps=1,
                         batch_size=1, seq_len=64, eval_examples=0)
    run_dir = lifecycle.create(config, options)
    lifecycle.execute(run_dir)
    return run_dir.name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default=",".join(m for m in METHODS))
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    prompt = "Tell me about the sea in two sentences."
    print(f"{'method':<8} {'base ms/tok':>11} {'adapted/base':>12} {'merged/base':>11} {'FLOP overhead':>13}  merged goal")
    for method in args.methods.split(","):
        run_id = one_step_run(method)
        cost = compare.measure_cost(run_id, prompt, new_tokens=args.tokens, repeats=args.repeats)
        lat, flops = cost["latency_ms_per_token"], cost["flop_overhead_percent"]
        merged = "cannot merge" if lat["merged"] is None else f"{lat['merged'] / lat['base']:.3f}"
        goal = "" if lat["merged"] is None else ("ok" if abs(lat["merged"] / lat["base"] - 1) <= 0.03 else "MISSED")
        print(f"{method:<8} {lat['base']:>11.2f} {lat['adapted'] / lat['base']:>12.3f} {merged:>11} "
              f"{flops['adapted']:>12.2f}%  {goal}", flush=True)
        loaded_models.LOADED.drop("compare:" + run_id)  # one method's models in memory at a time


if __name__ == "__main__":
    main()
