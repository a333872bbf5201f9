"""``python -m explorer race``: every entrant on the same data and budget, in this process, then the table;
``python -m explorer races``: the saved races, newest first.

    python -m explorer race --model NAME --dataset NAME|PATH --entrants SPEC[,SPEC...] --steps N [--json]
        SPEC: a method with options, e.g. lora, lora:r=1, lora:r=64:lora_alpha=128, ia3,
        prompt:num_virtual_tokens=10; "default" = every method of the default field plus a LoRA rank sweep;
        "all" = every method of the registry at its defaults.
    python -m explorer races [--json]

The race's estimate (runs, memory, time) is printed before anything trains. With --json the last line printed
is one object {"race_id", "model", "dataset", "steps", "winner", "best", "cheapest_close", "reading": [...],
"entrants": [... each with "verdict" and "heldout_losses" ...]}. An entrant that fails is a row with "error"
and the race goes on. Errors in the specs are one line, before anything trains.
"""

from __future__ import annotations

import json
import sys
import time


def add_parser(sub) -> None:
    p = sub.add_parser("race", help="every entrant on the same data and budget: the tradeoff in one table")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dataset", default="pirate", help="pirate, french, json_extract, sentiment, or a JSONL/CSV path")
    p.add_argument("--entrants", default="default",
                   help="comma-separated specs (lora:r=4,ia3,...), 'default' (the default field and a LoRA rank "
                        "sweep) or 'all' (every method at its defaults)")
    p.add_argument("--steps", default="20")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a race setting: batch_size, seq_len, seed, eval_every, eval_loss_examples, eval_examples, "
                        "probe_examples, max_new_tokens, score, rate_sweep")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_race)

    p = sub.add_parser("races", help="the saved races, newest first (id, model, dataset, entrants, finished)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_races)


def race_summary(race) -> dict:
    """One saved race as ``races --json`` lists it."""
    from ..train import runs

    return {"race_id": race.race_id, "created": race.created,
            "created_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(race.created)),
            "model": race.settings.model, "dataset": runs.dataset_label(race.settings.dataset),
            "entrants": len(race.entrants), "steps": race.settings.steps, "finished": race.finished}


def cmd_races(args) -> None:
    from ..race.races import list_races

    listed = [race_summary(race) for race in list_races()]
    if args.json:
        print(json.dumps(listed))
        return
    if not listed:
        print("No saved races yet: python -m explorer race ... starts one.")
        return
    print(f"{'race id':<29} {'model':<24} {'dataset':<14} {'entrants':>8}  finished")
    for r in listed:
        print(f"{r['race_id']:<29} {r['model']:<24} {r['dataset']:<14} {r['entrants']:>8}  "
              f"{'yes' if r['finished'] else 'no'}")


def cmd_race(args) -> None:
    from ..race import entrants as entrant_specs
    from ..race import reading, results, runner
    from ..race.estimate import estimate_race
    from ..race.races import RaceSettings, create_race
    from .args import parse_sets

    values = {"model": args.model, "dataset": args.dataset, "steps": args.steps, **parse_sets(args.set)}
    race_settings = RaceSettings.parse(values)
    chosen = entrant_specs.parse_specs(args.entrants)  # every spec checked before anything is created
    from ..train.config import TrainConfig

    TrainConfig.parse({"model": race_settings.model, "dataset": race_settings.dataset, "score": race_settings.score,
                       "steps": race_settings.steps, "batch_size": race_settings.batch_size,
                       "seq_len": race_settings.seq_len})  # the hosting caps and the score, before anything trains
    from ..data import sources

    sources.load_dataset(race_settings.dataset)  # an unreadable dataset: one line, no race
    print("estimate: " + estimate_race(race_settings, chosen).line(race_settings.steps, markdown=False),
          file=sys.stderr, flush=True)
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
    if args.json:
        print(json.dumps(results.as_json(race)))
        return
    table = results.rows(race)
    print(f"{'entrant':<28} {'verdict':<28} {'trainable':>12} {'held-out loss':>15} {'task':>11} {'probe':>11} "
          f"{'train s':>8} front")
    for row in table:
        if row["error"]:
            print(f"{row['name']:<28} failed: {row['error']}")
            continue
        loss = (f"{row['heldout_loss_first']:.3f}→{row['heldout_loss_last']:.3f}"
                if isinstance(row["heldout_loss_first"], float) and row["heldout_loss_last"] is not None else "")
        task = _pair(row["task_score_base"], row["task_score_adapted"])
        probe = _pair(row["probe_score_base"], row["probe_score"])
        seconds = f"{row['train_seconds']:.0f}" if row["train_seconds"] else ""
        judged = (row["verdict"] or row["state"]).replace("_", " ")
        print(f"{row['name']:<28} {judged:<28} {row['trainable_params'] or 0:>12,} {loss:>15} {task:>11} "
              f"{probe:>11} {seconds:>8} {'*' if row['pareto'] else ''}")
    print()
    print(reading.as_markdown(table, questions=race.settings.eval_examples).replace("**", ""))


def _pair(before, after) -> str:
    if not isinstance(after, (int, float)):
        return ""
    return f"{before:.2f}→{after:.2f}" if isinstance(before, (int, float)) else f"{after:.2f}"
