"""Inference latency of base, adapted (unmerged) and merged models, every method, with an A/A control.

Usage: python bench/merge_overhead.py [--model smollm2-135m-instruct] [--methods lora,dora,...] [--tokens 32]
                                      [--seconds 1800]
README figures: python bench/merge_overhead.py --seconds 1800

For each method it trains a one-step run (the adapter's values do not change its cost), loads the Compare
tab's session for it (explorer.compare.variants), then times greedy generation of the same prompt
(``generation_ms_per_token``, what the Compare tab times) round after round in rotating order
(bench/measure.py): the base model, the base again (the A/A control: the bench's resolution), the adapted
model and the merged one. Full fine-tuning and head-only runs are a plain model already: their merged model
is the adapted one (timed once, reported for both), and being a model of the base's very shapes, their
merged / base is a second A/A pair. Rounds stop when every interval is within ±1%, or at the method's share of
the time cap (what is left, split evenly over the methods still to measure). Runs go to a temporary folder.

Prints a row per method as it finishes, then one line per figure: merged / base (goal: within 3%, i.e.
0.97 .. 1.03) and adapted / base, each with its median, 95% interval, the A/A resolution of the same rounds
and a verdict, beside the Calculator's FLOP overhead.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("EXPLORER_RUNS_DIR", tempfile.mkdtemp(prefix="bench-merge-"))
warnings.filterwarnings("ignore")

import measure  # noqa: E402
from explorer.compare import variants as compare  # noqa: E402
from explorer.methods import METHODS  # noqa: E402
from explorer.models import loaded as loaded_models, provision  # noqa: E402
from explorer.train import lifecycle, runs  # noqa: E402
from explorer.train.config import TrainConfig  # noqa: E402

PROMPT = "Tell me about the sea in two sentences."
MERGE_GOAL = measure.within(0.97, 1.03)


def one_step_run(model: str, method: str) -> str:
    config = TrainConfig(model=model, method=method, dataset="pirate", steps=1, batch_size=1, seq_len=64,
                         eval_examples=0, score_base=False)
    outcome = lifecycle.execute(lifecycle.create(config, {}))
    if outcome.state != "done":
        raise SystemExit(f"{method}: the one-step run ended {outcome.state}: {outcome.error}")
    return outcome.summary["run_id"]


def measure_method(run_id: str, tokens: int, seconds: float, warmup: int,
                   max_rounds: int | None = None) -> tuple[measure.Rounds, bool]:
    """Interleaved rounds of the run's variants; and whether its merged model is the adapted one."""
    s = compare.session(run_id)
    prompt = compare.check_prompts([PROMPT])[0]
    models = {"base": s.base, "adapted": s.adapted}
    same = s.merged is s.adapted
    if s.merged is not None and not same:
        models["merged"] = s.merged
    with s.lock:
        rounds = measure.interleave(
            {name: (lambda m=m: compare.generation_ms_per_token(s, m, prompt, tokens)) for name, m in models.items()},
            control="base", seconds=seconds, warmup=warmup, max_rounds=max_rounds, precision=0.01,
            ratios=[(name, "base") for name in models if name != "base"])
    if same:  # one model, timed once: its samples are the merged column too
        rounds.samples["merged"] = rounds.samples["adapted"]
    return rounds, same


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=provision.BUNDLED_NAME)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per sample")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rounds before measuring")
    parser.add_argument("--seconds", type=float, default=1800.0, help="time cap for the whole bench")
    parser.add_argument("--rounds", type=int, default=None, help="stop each method after this many rounds (a "
                        "count: the same number of rounds on any machine)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"Unknown method {', '.join(unknown)}: choose from {', '.join(METHODS)}.")
    deadline = time.perf_counter() + args.seconds
    print(f"model {args.model}, {args.tokens} generated tokens per sample, time cap {args.seconds:g} s", flush=True)
    print(f"{'method':<8} {'rounds':>6} {'base ms/tok':>11} {'A/A':>7} {'adapted/base':>12} {'merged/base':>11} "
          f"{'FLOP overhead':>13}  stopped", flush=True)
    figures = []
    for left, method in zip(range(len(methods), 0, -1), methods):
        share_end = time.perf_counter() + (deadline - time.perf_counter()) / left
        run_id = one_step_run(args.model, method)
        rounds, same = measure_method(run_id, args.tokens, share_end - time.perf_counter(), args.warmup,
                                      args.rounds)
        flops = compare.calculator_overhead_percent(runs.open_run(run_id))
        noise, aa = rounds.resolution(), rounds.control_ratio()
        adapted = rounds.ratio("adapted", "base")
        merged = rounds.ratio("merged", "base") if "merged" in rounds.samples else None
        print(f"{method:<8} {rounds.count:>6} {rounds.interval('base').estimate:>11.2f} {aa.estimate:>7.3f} "
              f"{adapted.estimate:>12.3f} {'cannot merge' if merged is None else f'{merged.estimate:.3f}':>11} "
              f"{flops['adapted']:>12.2f}%  {rounds.stopped}", flush=True)
        figures.append(measure.Figure(f"{method}: A/A base / base", aa, noise))
        if merged is not None:
            name = f"{method}: merged / base" + (" (merged = adapted)" if same else "")
            figures.append(measure.Figure(name, merged, noise, MERGE_GOAL))
        if not same:
            figures.append(measure.Figure(f"{method}: adapted / base", adapted, noise))
        loaded_models.LOADED.drop("compare:" + run_id)  # one method's models in memory at a time
    print(measure.final_block("merge_overhead: ms per generated token, ratios per round",
                              figures, f"merged goal: within 3% of base, {MERGE_GOAL}"))


if __name__ == "__main__":
    main()
