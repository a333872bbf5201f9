"""A race's results, entrant by entrant: measured on this machine, with the Calculator's figures beside them.

Every number comes from the entrant's run (summary.json, log.jsonl), the race's base scores (base.json), or
the Calculator (exact formulas, checked against PEFT and torch in the tests). With a learning-rate sweep,
each entrant keeps the rate with the best held-out loss; the other rates stay in the table, marked.
"""

from __future__ import annotations

import csv
import io
import math
from functools import lru_cache

from .. import calculator
from ..data.uploads import safe_cell
from ..errors import ExplorerError
from ..methods import METHODS
from ..models import specs as model_specs
from ..train import runs
from . import pareto, verdicts
from .races import Race

COLUMNS = ("name", "method", "options", "learning_rate", "run_id", "state", "error", "trainable_params",
           "calculator_trainable_params", "peak_memory_bytes", "predicted_peak_bytes", "train_seconds",
           "wall_seconds", "tokens_per_second", "heldout_loss_first", "heldout_loss_last", "task_score_base",
           "task_score_adapted", "probe_score_base", "probe_score", "saved_bytes",
           "inference_overhead_flops_per_token", "mergeable", "kept", "pareto", "verdict", "verdict_reason")
COSTS = {"trainable_params": "trainable parameters", "peak_memory_bytes": "process peak memory (measured)",
         "train_seconds": "training time (s)", "inference_overhead_flops_per_token": "inference overhead (FLOPs/token)"}
QUALITIES = {"heldout_loss_last": ("held-out loss (lower is better)", False),
             "task_score_adapted": ("task score (higher is better)", True),
             "probe_score": ("forgetting probe (higher is better)", True)}


@lru_cache(maxsize=512)
def _calculator(model: str, method: str, options: tuple) -> tuple[int, float, bool]:
    """(exact trainable count, inference overhead FLOPs per token as served, mergeable) from the Calculator."""
    result = calculator.calculate(model_specs.resolve(model), method, METHODS[method].parse_options(dict(options)),
                                  exact_mode="compute")
    f = result.flops
    merged = METHODS[method].mergeable
    return (result.trainable, f.inference_overhead_per_token_merged if merged else
            f.inference_overhead_per_token_unmerged, merged)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def curves(race: Race, folder) -> tuple[list[list], bool]:
    """The entrant's held-out losses as [[step, loss], ...] from its log, starting at the base model's (step 0,
    measured once per race), and whether every loss it logged (training and held-out) was a finite number."""
    events = runs.read_log(folder)
    base = race.base.get("heldout_loss")
    points = [[0, base]] if _finite(base) and events else []
    points += [[e["step"], e["eval_loss"]] for e in events if "eval_loss" in e and (e.get("step") or not points)]
    finite = all(_finite(e[key]) for e in events for key in ("loss", "eval_loss") if key in e)
    return points, finite


def entrant_row(race: Race, entrant: dict) -> dict:
    folder = runs.runs_dir() / entrant["run_id"]
    try:
        run = runs.read_run(folder)
    except OSError:
        run = None
    summary = run.summary if run else {}
    heldout_losses, losses_finite = curves(race, folder) if run else ([], True)
    row = {"name": entrant["name"], "method": entrant["method"], "options": entrant["options"],
           "learning_rate": entrant["learning_rate"] or METHODS[entrant["method"]].default_lr,
           "run_id": entrant["run_id"], "state": run.state if run else "missing",
           "error": (run.error if run and run.state == "failed" else None) or
                    (None if run else "the run's folder is gone")}
    try:
        exact, overhead, mergeable = _calculator(race.settings.model, entrant["method"],
                                                 tuple(sorted(entrant["options"].items())))
    except ExplorerError:
        exact, overhead, mergeable = None, None, METHODS[entrant["method"]].mergeable
    base = race.base
    row.update({
        "trainable_params": summary.get("trainable_params"), "calculator_trainable_params": exact,
        "peak_memory_bytes": summary.get("peak_memory_bytes"), "predicted_peak_bytes": summary.get("predicted_peak_bytes"),
        "train_seconds": summary.get("train_seconds"), "wall_seconds": summary.get("seconds"),
        "tokens_per_second": summary.get("tokens_per_second"),
        "heldout_loss_first": base.get("heldout_loss", summary.get("eval_loss_first")),
        "heldout_loss_last": summary.get("eval_loss_last") if summary.get("steps") else None,
        "task_score_base": base.get("task_score"), "task_score_adapted": summary.get("task_score_adapted"),
        "probe_score_base": base.get("probe_score"), "probe_score": summary.get("probe_score"),
        "saved_bytes": summary.get("saved_bytes"), "inference_overhead_flops_per_token": overhead,
        "mergeable": mergeable, "new_model": METHODS[entrant["method"]].new_model,
        "heldout_losses": heldout_losses, "losses_finite": losses_finite,
        "memory_ratio": (summary["peak_memory_bytes"] / summary["predicted_peak_bytes"]
                         if summary.get("peak_memory_bytes") and summary.get("predicted_peak_bytes") else None)})
    return row


def rows(race: Race) -> list[dict]:
    """One row per entrant (per swept rate), with "kept" (the best rate of its group) and "pareto" (on the
    front of held-out loss against trainable parameters, among kept, finished entrants)."""
    table = [entrant_row(race, e) | {"group": e.get("group", i)} for i, e in enumerate(race.entrants)]
    best: dict = {}
    for row in table:
        loss = row["heldout_loss_last"]
        if row["state"] == "done" and isinstance(loss, float) and (
                row["group"] not in best or loss < best[row["group"]]["heldout_loss_last"]):
            best[row["group"]] = row
    for row in table:
        row["kept"] = best.get(row["group"]) is row or (row["group"] not in best and row is next(
            r for r in table if r["group"] == row["group"]))
    finished = [r if r["kept"] and r["state"] == "done" else {} for r in table]
    for row, on_front in zip(table, pareto.front_of(finished, "trainable_params", "heldout_loss_last")):
        row["pareto"] = on_front
    verdicts.judge_all(table)
    return table


def front(table: list[dict], cost: str, quality: str) -> list[bool]:
    """The Pareto front of the kept, finished entrants for any cost and quality of the page's pickers."""
    finished = [r if r["kept"] and r["state"] == "done" else {} for r in table]
    return pareto.front_of(finished, cost, quality, higher_is_better=QUALITIES[quality][1])


def as_json(race: Race) -> dict:
    """What ``python -m explorer race --json`` prints last: the race, every entrant with its verdict and held-out
    curve, and the reading (its verdict first): "winner" is the entrant with the best held-out loss among those
    that learned, or None when several tie within the race's noise ("best" lists them) or none learned."""
    from . import reading

    s = race.settings
    keys = ("name", "method", "options", "run_id", "trainable_params", "peak_memory_bytes", "predicted_peak_bytes",
            "train_seconds", "tokens_per_second", "heldout_loss_first", "heldout_loss_last", "task_score_base",
            "task_score_adapted", "probe_score_base", "probe_score", "saved_bytes",
            "inference_overhead_flops_per_token", "mergeable", "pareto", "verdict", "verdict_reason",
            "heldout_losses", "memory_ratio")
    table = rows(race)
    entrants = []
    for row in table:
        item = {k: row[k] for k in keys}
        item.update({"learning_rate": row["learning_rate"], "state": row["state"], "kept": row["kept"],
                     "calculator_trainable_params": row["calculator_trainable_params"]})
        if row["error"]:
            item["error"] = row["error"]
        entrants.append(item)
    found = reading.reading(table, questions=s.eval_examples)
    return {"race_id": race.race_id, "model": s.model, "dataset": runs.dataset_label(s.dataset), "steps": s.steps,
            "base": race.base, "winner": found["verdict"]["winner"], "best": found["verdict"]["best"],
            "cheapest_close": found["verdict"]["cheapest_close"], "reading": reading.sentences(found),
            "entrants": entrants}


def to_csv(race: Race) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows(race):
        text = {"options": ";".join(f"{k}={v}" for k, v in row["options"].items())}
        text.update({k: row[k] for k in ("name", "error") if row[k]})
        writer.writerow({**row, **{k: safe_cell(v) for k, v in text.items()}})  # no spreadsheet formulas
    return out.getvalue()
