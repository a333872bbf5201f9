"""How long a race takes, and where each entrant's time goes.

Usage: python bench/race.py [--model smollm2-135m-instruct] [--dataset pirate] [--entrants default] [--steps N]
                            [--repeats 1] [--set KEY=VALUE ...]

Runs a whole race in this process (as the race worker does), in fresh run and race folders (nothing is
reused), and prints per entrant: wall time, optimizer-step time, and the time outside the steps split into
loading (model and method), evaluation (held-out loss, task score, probe) and saving, from the timestamps of
the run's own log. Targets (issue 12): the default race on the bundled model within 15 minutes on 2 CPU
cores, and at most 15% of each entrant's wall time outside optimizer steps; the base model is scored once
per race (its time is printed on its own line).

One race is one measurement: with --repeats N the race runs N times (fresh folders each time) and the
figures are the median and range over races (bench/measure.py's ``spread``); a verdict needs the whole range
on one side of the target. The README quotes: python bench/race.py --repeats 1
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
    return seconds, race.base.get("seconds", 0.0), parts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dataset", default="pirate")
    parser.add_argument("--entrants", default="default")
    parser.add_argument("--steps", default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a race setting (batch_size, ...)")
    args = parser.parse_args(argv)
    import torch

    totals, bases, shares = [], [], {}
    for repeat in range(args.repeats):
        print(f"race {repeat + 1} of {args.repeats} ({args.model}, {args.dataset}, {torch.get_num_threads()} threads)")
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
