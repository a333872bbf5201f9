"""``python -m explorer race``: every entrant on the same data and budget, in this process, then the table.

    python -m explorer race --model NAME --dataset NAME|PATH --entrants SPEC[,SPEC...] --steps N [--json]
        SPEC: a method with options, e.g. lora, lora:r=1, lora:r=64:lora_alpha=128, ia3,
        prompt:num_virtual_tokens=10; "default" = every method plus a LoRA rank sweep.

With --json the last line printed is one object {"race_id", "model", "dataset", "steps", "entrants": [...]}.
An entrant that fails is a row with "error" and the race goes on. Errors in the specs are one line, before
anything trains.
"""

from __future__ import annotations

import json
import sys



def add_parser(sub) -> None:
    p = sub.add_parser("race", help="every entrant on the same data and budget: the tradeoff in one table")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dataset", default="pirate", help="pirate, french, json_extract, sentiment, or a JSONL/CSV path")
    p.add_argument("--entrants", default="default", help="comma-separated specs (lora:r=4,ia3,...) or 'default'")
    p.add_argument("--steps", default="20")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a race setting: batch_size, seq_len, seed, eval_every, eval_examples, probe_examples, "
                        "max_new_tokens, score, rate_sweep")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_race)


def cmd_race(args) -> None:
    from ..race import entrants as entrant_specs
    from ..race import reading, results, runner
    from ..race.races import RaceSettings, create_race
    from .main import parse_sets

    values = {"model": args.model, "dataset": args.dataset, "steps": args.steps, **parse_sets(args.set)}
    race_settings = RaceSettings.parse(values)
    specs = entrant_specs.default_specs() if args.entrants.strip() == "default" else args.entrants
    chosen = entrant_specs.parse_specs(specs)  # every spec checked before anything is created
    from ..train.config import TrainConfig

    TrainConfig.parse({"model": race_settings.model, "dataset": race_settings.dataset, "score": race_settings.score,
                       "steps": race_settings.steps, "batch_size": race_settings.batch_size,
                       "seq_len": race_settings.seq_len})  # the hosting caps and the score, before anything trains
    from ..data import sources

    sources.load_dataset(race_settings.dataset)  # an unreadable dataset: one line, no race
    race = create_race(race_settings, chosen)
    print(f"race {race.race_id}: {len(race.entrants)} entrants, {race_settings.steps} steps each", file=sys.stderr)

    def show(event: dict) -> None:
        if event["event"] == "entrant":
            extra = f": {event['error']}" if event.get("error") else ""
            print(f"{event['name']}: {event['state']}{extra}", file=sys.stderr)
        elif event["event"] == "race":
            print(event["state"], file=sys.stderr)
        elif event["event"] == "step" and "eval_loss" in event:
            print(f"  {event['entrant']} step {event['step']}: held-out loss {event['eval_loss']:.4f}", file=sys.stderr)

    race = runner.run(race, on_event=show)
    table = results.rows(race)
    if args.json:
        print(json.dumps(results.as_json(race)))
        return
    print(f"{'entrant':<28} {'trainable':>12} {'held-out loss':>15} {'task':>11} {'probe':>11} {'train s':>8} front")
    for row in table:
        if row["error"]:
            print(f"{row['name']:<28} failed: {row['error']}")
            continue
        loss = f"{row['heldout_loss_first']:.3f}→{row['heldout_loss_last']:.3f}" if row["heldout_loss_last"] else ""
        task = _pair(row["task_score_base"], row["task_score_adapted"])
        probe = _pair(row["probe_score_base"], row["probe_score"])
        seconds = f"{row['train_seconds']:.0f}" if row["train_seconds"] else ""
        print(f"{row['name']:<28} {row['trainable_params'] or 0:>12,} {loss:>15} {task:>11} {probe:>11} "
              f"{seconds:>8} {'*' if row['pareto'] else ''}")
    print()
    print(reading.as_markdown(table).replace("**", ""))


def _pair(before, after) -> str:
    if not isinstance(after, (int, float)):
        return ""
    return f"{before:.2f}→{after:.2f}" if isinstance(before, (int, float)) else f"{after:.2f}"

