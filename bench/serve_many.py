"""One base serving many LoRA adapters: throughput of PEFT's mixed batch against merged models and adapter swapping.

Usage: python bench/serve_many.py [--model smollm2-135m-instruct] [--adapters 4] [--prompts 4] [--tokens 16]
                                  [--seconds 900]
README figures: python bench/serve_many.py --seconds 900

Trains ``--adapters`` one-step LoRA runs (an adapter's values do not change its cost) in a temporary folder,
loads them as one base with N named adapters (explorer.compare.serve_many), and builds the N merged copies a
merged deployment would hold. The same requests (every prompt asked of every adapter, exactly ``--tokens``
greedy tokens each) are then answered three ways, round after round in rotating order (bench/measure.py):
  - mixed:  ONE generate call holding every request, each row naming its adapter (adapter_names);
  - merged: each merged model in turn answers its own prompts in one batch (N calls);
  - swap:   one request at a time, set_adapter between requests (N × prompts calls);
plus the mixed batch a second time each round (the A/A control: the bench's resolution).

Prints the measured memory (tensors held: one base + N adapters against N merged copies) and the ratios
merged / mixed and swap / mixed of the seconds per round, i.e. how many times faster the mixed batch is; the
chapter's claim is about memory ("one base ... thousands of behaviours"), so the speed figures have no target.
"""

import argparse
import os
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("EXPLORER_RUNS_DIR", tempfile.mkdtemp(prefix="bench-serve-"))
warnings.filterwarnings("ignore")

import measure  # noqa: E402
from explorer.compare import serve_many  # noqa: E402
from explorer.data.tasks import TASKS  # noqa: E402
from explorer.models import provision  # noqa: E402
from explorer.models.loaded import tensor_bytes  # noqa: E402
from explorer.train import lifecycle  # noqa: E402
from explorer.train.config import TrainConfig  # noqa: E402

PROMPTS = ["Tell me about the sea in two sentences.", "What is the capital of France?",
           "Write a short greeting for a new colleague.", "Name three fruits.", "How do plants grow?",
           "Describe a ship.", "What is two plus two?", "Say something kind."]
MIB = 2 ** 20


def one_step_run(model: str, dataset: str) -> str:
    config = TrainConfig(model=model, method="lora", dataset=dataset, steps=1, batch_size=1, seq_len=64,
                         eval_examples=0, score_base=False)
    outcome = lifecycle.execute(lifecycle.create(config, {}))
    if outcome.state != "done":
        raise SystemExit(f"the one-step run on {dataset} ended {outcome.state}: {outcome.error}")
    return outcome.summary["run_id"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=provision.BUNDLED_NAME)
    parser.add_argument("--adapters", type=int, default=4, help=f"LoRA runs served (1 to {serve_many.MAX_ADAPTERS})")
    parser.add_argument("--prompts", type=int, default=4, help=f"prompts asked of every adapter (1 to {len(PROMPTS)})")
    parser.add_argument("--tokens", type=int, default=16, help="tokens generated per request")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rounds before measuring")
    parser.add_argument("--seconds", type=float, default=900.0, help="time cap for the rounds")
    parser.add_argument("--rounds", type=int, default=None, help="stop after this many rounds (a count: the same "
                        "number of rounds on any machine)")
    args = parser.parse_args(argv)
    if not 1 <= args.adapters <= serve_many.MAX_ADAPTERS or not 1 <= args.prompts <= len(PROMPTS):
        raise SystemExit(f"--adapters must be 1 to {serve_many.MAX_ADAPTERS} and --prompts 1 to {len(PROMPTS)}.")
    tasks = list(TASKS)
    run_ids = [one_step_run(args.model, tasks[i % len(tasks)]) for i in range(args.adapters)]
    fleet = serve_many.load_fleet(serve_many.check_runs(run_ids))
    merged = [serve_many.merged_copy(run) for run in fleet.runs]
    prompts = PROMPTS[:args.prompts]
    requests = [(name, p) for p in prompts for name in fleet.names]

    def mixed():
        serve_many.generate(fleet, [p for _, p in requests], [n for n, _ in requests], args.tokens, exact_length=True)

    def merged_in_turn():
        for copy in merged:
            serve_many.generate(fleet, prompts, None, args.tokens, exact_length=True, model=copy)

    def swap():
        for name, prompt in requests:
            fleet.model.set_adapter(name)
            serve_many.generate(fleet, [prompt], None, args.tokens, exact_length=True)

    shared, copies = tensor_bytes(fleet.model), sum(tensor_bytes(m) for m in merged)
    print(f"model {args.model}: {args.adapters} LoRA adapters (r=8, all linear layers), {len(requests)} requests of "
          f"{args.tokens} tokens per round; memory held: one base + adapters {shared / MIB:,.1f} MiB, "
          f"{args.adapters} merged copies {copies / MIB:,.1f} MiB ({copies / shared:.2f}x)", flush=True)
    rounds = measure.interleave({"mixed": measure.timed(mixed), "merged": measure.timed(merged_in_turn),
                                 "swap": measure.timed(swap)}, control="mixed", seconds=args.seconds,
                                max_rounds=args.rounds, warmup=args.warmup, precision=0.02, ratios=[("merged", "mixed"), ("swap", "mixed")])
    tokens = len(requests) * args.tokens
    for slot in ("mixed", "merged", "swap"):
        seconds = rounds.interval(slot).estimate
        print(f"{slot:<7} median {seconds:.3f} s per round, {tokens / seconds:.1f} tokens/s", flush=True)
    noise = rounds.resolution()
    figures = [measure.Figure("A/A: mixed / mixed", rounds.control_ratio(), noise),
               measure.Figure("merged in turn / mixed batch (seconds)", rounds.ratio("merged", "mixed"), noise),
               measure.Figure("swap per request / mixed batch (seconds)", rounds.ratio("swap", "mixed"), noise)]
    print(measure.final_block("serve_many: seconds per round, ratios per round", figures, rounds.describe()))


if __name__ == "__main__":
    main()
