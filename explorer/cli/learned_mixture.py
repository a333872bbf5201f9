"""``compose --learn-weights``: the weights of a LoRA mixture searched on a few example rows (LoRAHub's idea).

Usage:
    python -m explorer compose --learn-weights --runs A,B[,...] --examples PATH|TASK [--target TASK|PATH]
                               [--shots N] [--iterations N] [--max-new-tokens N] [--json]
Progress (the loss of each CMA-ES generation) goes to stderr as it happens; the result to stdout.
"""

from __future__ import annotations

import json
import sys

from ..errors import ExplorerError
from ..options import whole as parse_whole


def cmd_learn_weights(args) -> None:
    from ..compare import mixture

    extra = [flag for flag, value in (("--how", args.how), ("--kind", args.kind), ("--weights", args.weights),
                                      ("--density", args.density), ("--model", args.model), ("--steps", args.steps))
             if value is not None] + (["--demo-runs"] if args.demo_runs else [])
    if extra:
        raise ExplorerError(f"--learn-weights searches the weights itself (a 'cat' mixture): drop {', '.join(extra)}.")
    if args.run_ids is None or args.examples is None:
        raise ExplorerError("--learn-weights needs --runs A,B[,...] (LoRA runs on one base) and --examples PATH "
                            "(a JSONL/CSV file of 5-10 rows of the target task, or a bundled task's name).")

    def on_iteration(event):
        weights = ", ".join(f"{w:+.2f}" for w in event["best_weights"])
        print(f"iteration {event['iteration']} ({event['evaluations']} mixtures tried): best loss "
              f"{event['best_loss']:.4f} (weights {weights}), mean of this generation {event['mean_loss']:.4f}",
              file=sys.stderr, flush=True)

    result = mixture.learn_weights(
        args.run_ids, args.examples.strip(), target=args.target.strip() if args.target else None,
        shots=parse_whole("--shots", args.shots) if args.shots is not None else 8,
        iterations=parse_whole("--iterations", args.iterations) if args.iterations is not None else 8,
        max_new_tokens=parse_whole("--max-new-tokens", args.max_new_tokens) if args.max_new_tokens else 32,
        on_iteration=on_iteration)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"learned mixture of {len(result['runs'])} LoRA runs on {result['model']}: {result['shots']} example rows, "
          f"{result['iterations']} CMA-ES generations, held-out rows of {result['target']}")
    labels = dict(zip(result["runs"], result["datasets"]))
    for run_id, weight in result["weights"].items():
        print(f"  weight {weight:+.3f}  {run_id} ({labels[run_id]})")
    print(f"\n{'':<34} {'example loss':>12} {'held-out loss':>13} {'task score':>10}")
    for name, row in result["evaluation"].items():
        label = f"{name} ({labels[name]})" if name in labels else name
        score = "-" if row["task_score"] is None else f"{row['task_score']:.2f}"
        print(f"{label:<34} {row['few_shot_loss']:>12.4f} {row['heldout_loss']:>13.4f} {score:>10}")
    print(result["summary"])
