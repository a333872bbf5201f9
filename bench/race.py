"""How long a race takes, and where each entrant's time goes.

Usage: python bench/race.py [--model smollm2-135m-instruct] [--dataset pirate] [--entrants default] [--steps N]
                            [--repeats 1] [--set KEY=VALUE ...]

Runs a whole race in this process (as the race worker does), in fresh run and race folders (nothing is
reused), and prints per entrant: wall time, optimizer-step time, and the time outside the steps split into
loading (model and method), evaluation (held-out loss, task score, probe) and saving, from the timestamps of
the run's own log. Targets (issue 12): the default race on the bundled model within 15 minutes on 2 CPU
cores, and at most 15% of each entrant's wall time outside optimizer steps; the base model is scored once
per race (its time is printed on its own line).

With --budgets 8,12 the last race's entrants (and the base) are asked the scored questions once more and their
task and probe scores are printed at each of those generation budgets beside the race's own: greedy decoding
makes a shorter budget's reply a prefix of the longer one, so one generation (at the largest) gives every
column. It shows what generating fewer tokens (the largest part of the time outside the steps) would change in
what the race reports.

One race is one measurement: with --repeats N the race runs N times (fresh folders each time) and the
figures are the median and range over races (bench/measure.py's ``spread``); a verdict needs the whole range
on one side of the target. The README quotes: python bench/race.py --repeats 2, and
--repeats 1 --budgets 8,10,12,14
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")

import measure  # noqa: E402

RACE_MINUTES = 15
OUTSIDE_SHARE = 0.15


def breakdown(folder, started: float, ended: float) -> dict:
    """Seconds of one entrant: wall, steps, and load / evaluation / save from its log's timestamps."""
    from explorer.train import runs

    events = runs.read_log(folder)
    summary = runs.read_json(folder / "summary.json", {})
    when = {e["event"]: e["time"] for e in reversed(events)}  # the first time each event occurred
    steps = summary.get("train_seconds") or 0.0
    load = when.get("data", started) - started
    last_score = max((e["time"] for e in events if e["event"] in ("score", "probe", "step")), default=ended)
    save = max(ended - last_score, 0.0)
    wall = ended - started
    evaluation = max(wall - load - steps - save, 0.0)
    return {"wall": wall, "steps": steps, "load": load, "evaluation": evaluation, "save": save,
            "outside": (wall - steps) / wall if wall else 0.0, "state": runs.status(folder).get("state")}


def one_race(args) -> tuple[float, float, dict]:
    """(race seconds, base-scoring seconds, {entrant: breakdown}) of one race in fresh folders."""
    saved = {k: os.environ.get(k) for k in ("EXPLORER_RUNS_DIR", "EXPLORER_RACES_DIR")}
    os.environ["EXPLORER_RUNS_DIR"] = tempfile.mkdtemp(prefix="bench-race-runs-")
    os.environ["EXPLORER_RACES_DIR"] = tempfile.mkdtemp(prefix="bench-race-races-")
    try:
        return _race(args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _race(args) -> tuple[float, float, dict]:
    from explorer.cli.main import parse_sets
    from explorer.race import entrants, runner
    from explorer.race.races import RaceSettings, create_race

    settings = RaceSettings.parse({"model": args.model, "dataset": args.dataset,
                                   **({"steps": args.steps} if args.steps else {}), **parse_sets(args.set)})
    specs = entrants.default_specs() if args.entrants == "default" else args.entrants
    race = create_race(settings, specs)
    marks: dict = {}

    def note(event: dict) -> None:
        if event["event"] == "entrant":
            marks.setdefault(event["name"], {})[event["state"]] = time.time()
            print(f"  {event['name']}: {event['state']}", flush=True)

    start = time.time()
    race = runner.run(race, on_event=note)
    seconds = time.time() - start
    parts = {}
    for entrant, folder in zip(race.entrants, race.run_folders()):
        mark = marks.get(entrant["name"], {})
        if "training" in mark:
            ended = max(v for k, v in mark.items() if k != "training")
            parts[entrant["name"]] = breakdown(folder, mark["training"], ended)
    if args.budgets and args.last:
        scores_at_budgets(race, sorted(set(args.budgets) | {settings.max_new_tokens}))
    return seconds, race.base.get("seconds", 0.0), parts


def nan_if_none(value):
    return float("nan") if value is None else value


def scores_at_budgets(race, budgets: list[int]) -> None:
    """Task and probe scores of the base and of every finished entrant at each generation budget."""
    from explorer import evaluate
    from explorer.data import scores, sources
    from explorer import scored
    from explorer.methods import METHODS
    from explorer.models import loading
    from explorer.train import runs

    s = race.settings
    _, heldout = sources.load_dataset(s.dataset)
    asked = scored.ScoredQuestions(heldout[:s.eval_examples], scores.task_for(s.dataset, s.score), s.probe_examples)
    print(f"task (probe) score at each generation budget, {len(asked.pairs)} task and {len(asked.chosen)} probe "
          f"prompts; the race generates {s.max_new_tokens} tokens")
    print(f"{'entrant':<28} " + " ".join(f"{b:>5} tok  " for b in budgets))

    def row(label: str, model, tokenizer, device: str) -> None:
        ids = evaluate.generate_token_ids(model, tokenizer, asked.prompts, max(budgets), device,
                                          batch_size=max(1, len(asked.prompts)))
        cells = []
        for budget in budgets:
            task, probe_score = asked.scores([tokenizer.decode(i[:budget], skip_special_tokens=True).strip()
                                              for i in ids])
            cells.append(f"{nan_if_none(task):.2f} ({nan_if_none(probe_score):.2f})")
        print(f"{label:<28} " + " ".join(f"{c:>10}" for c in cells), flush=True)

    base = loading.load_fresh(s.model, precision="fp32")
    row("base", base.model.eval(), base.tokenizer, base.device)
    del base
    for entrant, folder in zip(race.entrants, race.run_folders()):
        if runs.status(folder).get("state") != "done":
            continue
        saved = runs.read_json(folder / "settings.json", {})
        method = METHODS[saved["config"]["method"]]
        loaded = loading.load_with_adapter(saved["config"]["model"], method, method.parse_options(saved["options"]),
                                           saved["config"]["precision"], folder / runs.ADAPTER_DIR, entrant["name"])
        row(entrant["name"], loaded.model, loaded.tokenizer, loaded.device)


def budget_list(text: str) -> list[int]:
    """--budgets: new-token counts separated by commas, each from 1 to 512 (the race's own limit)."""
    try:
        budgets = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        budgets = []
    if not budgets or not all(1 <= b <= 512 for b in budgets):
        raise argparse.ArgumentTypeError(
            f"expected whole numbers of new tokens from 1 to 512 separated by commas, e.g. 8,12; got {text!r}")
    return budgets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dataset", default="pirate")
    parser.add_argument("--entrants", default="default")
    parser.add_argument("--steps", default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a race setting (batch_size, ...)")
    parser.add_argument("--budgets", type=budget_list, default=None, metavar="N,N",
                        help="after the last race, its entrants' task and probe scores at these generation budgets "
                             "too, shorter or longer than the race's (e.g. 8,12)")
    args = parser.parse_args(argv)
    import torch

    totals, bases, shares = [], [], {}
    for repeat in range(args.repeats):
        print(f"race {repeat + 1} of {args.repeats} ({args.model}, {args.dataset}, {torch.get_num_threads()} threads)")
        args.last = repeat == args.repeats - 1
        seconds, base, parts = one_race(args)
        totals.append(seconds)
        bases.append(base)
        print(f"{'entrant':<28} {'state':>8} {'wall s':>8} {'steps s':>8} {'load s':>7} {'eval s':>7} "
              f"{'save s':>7} {'outside':>8}")
        for name, p in parts.items():
            shares.setdefault(name, []).append(p["outside"])
            print(f"{name:<28} {p['state']:>8} {p['wall']:>8.1f} {p['steps']:>8.1f} {p['load']:>7.1f} "
                  f"{p['evaluation']:>7.1f} {p['save']:>7.1f} {p['outside']:>8.1%}")
        print(f"base model scored once: {base:.1f} s; whole race: {seconds / 60:.1f} min")
    worst = [max(values[i] for values in shares.values()) for i in range(args.repeats)]
    # A race is not an A/B pair: its uncertainty is the range over repeated races, so a verdict needs 3 of
    # them (the whole range on one side of the target); one race is reported without a verdict.
    figures = [
        measure.Figure("race minutes", measure.spread([t / 60 for t in totals]), 0.0, measure.at_most(RACE_MINUTES)),
        measure.Figure("worst entrant's share outside steps", measure.spread(worst), 0.0,
                       measure.at_most(OUTSIDE_SHARE)),
        measure.Figure("base scoring seconds (once per race)", measure.spread(bases), 0.0),
    ]
    print(measure.final_block("race", figures, f"{args.repeats} race(s) of {len(shares)} entrants"))


if __name__ == "__main__":
    main()
