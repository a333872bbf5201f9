"""Every entrant of a race judged in one fixed vocabulary, and the race's verdict, from the table's own numbers.

An entrant is exactly one of (the first rule that applies, in this order):

- ``failed``: its run failed (out of memory, a bad setting) or its folder is gone; the error is shown.
- ``diverged``: its run says so (state "diverged"), a training or held-out loss was not a finite number, or
  its held-out loss ended more than ``DIVERGE_FACTOR`` times the base model's.
- ``lost_general_knowledge``: the forgetting probe (general questions the base model answers) fell by more than
  ``FORGET_SHARE`` of the base model's probe score.
- ``did_not_learn``: in this budget, the held-out loss fell by less than ``LEARN_LOSS_SHARE`` of the base
  model's, or, where the task is scored, the task score rose by less than ``LEARN_TASK_SHARE`` of the room
  above the base model's score (for a base at 0: a quarter of the questions).
- ``learned``: none of the above.

An entrant cancelled or still training has no verdict yet (None).

The race's verdict: among entrants that learned, the best on the chosen quality axis; entrants within the
race's noise of the best tie with it. Noise: the held-out loss is a mean over a few held-out examples, so
differences under ``TIE_LOSS_SHARE`` of it are called ties; a score is a share of a few questions, so a
difference of one question (one reply that could have gone either way) is a tie. Then the cheapest learned
entrant within ``CLOSE_SHARE`` of the best. An entrant that did not learn, forgot, diverged or failed is never crowned.
"""

from __future__ import annotations

import math

LEARNED, DID_NOT_LEARN, LOST_GENERAL, DIVERGED, FAILED = (
    "learned", "did_not_learn", "lost_general_knowledge", "diverged", "failed")
VERDICTS = (LEARNED, DID_NOT_LEARN, LOST_GENERAL, DIVERGED, FAILED)
WORDS = {LEARNED: "learned", DID_NOT_LEARN: "did not learn in this budget",
         LOST_GENERAL: "lost general knowledge", DIVERGED: "diverged", FAILED: "failed"}

LEARN_LOSS_SHARE = 0.10   # the held-out loss must fall by at least 10% of the base model's
LEARN_TASK_SHARE = 0.25   # the task score must rise by at least a quarter of the room above the base's
FORGET_SHARE = 0.5        # a probe that fell by more than half of the base's score: general knowledge lost
DIVERGE_FACTOR = 1.5      # a held-out loss ending 50% above the base model's: the run blew up
TIE_LOSS_SHARE = 0.02     # held-out losses within 2% of each other: a tie
CLOSE_SHARE = 0.05        # "close to the best": within 5% of its held-out loss (or of its score)

RULES = (f"Rules: learned = the held-out loss fell by at least {LEARN_LOSS_SHARE:.0%} of the base model's and, "
         f"where the task is scored, the task score rose by at least {LEARN_TASK_SHARE:.0%} of the room above the "
         f"base's; lost general knowledge = the forgetting probe fell by more than {FORGET_SHARE:.0%} of the "
         f"base's; diverged = a loss that was not a number, or a held-out loss ending above "
         f"{DIVERGE_FACTOR:g}× the base's. Ties: held-out losses within {TIE_LOSS_SHARE:.0%} of each other "
         f"(a mean over a few held-out examples), or scores at most one question apart.")

HIGHER_IS_BETTER = {"heldout_loss_last": False, "task_score_adapted": True, "probe_score": True}
QUALITY_WORDS = {"heldout_loss_last": "held-out loss", "task_score_adapted": "task score",
                 "probe_score": "forgetting-probe score"}


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def judge(row: dict) -> tuple[str | None, str]:
    """(verdict, the reason in words with its numbers) for one result row (explorer.race.results.entrant_row)."""
    state = row["state"]
    if state in ("failed", "missing", "interrupted"):
        return FAILED, row.get("error") or f"its run ended {state}"
    if state in ("queued", "running", "cancelled"):
        return None, {"queued": "not started yet", "running": "training now",
                      "cancelled": "cancelled before it trained"}[state]
    base, last = row["heldout_loss_first"], row["heldout_loss_last"]
    losses = [loss for _, loss in row.get("heldout_losses") or []]
    if state == DIVERGED or not row.get("losses_finite", True) or any(not math.isfinite(v) for v in losses) or (
            _num(last) and not math.isfinite(last)):
        return DIVERGED, "its loss stopped being a finite number" if state != DIVERGED else "the run stopped it"
    if _num(base) and _num(last) and last > DIVERGE_FACTOR * base:
        return DIVERGED, f"its held-out loss rose from {base:.3f} to {last:.3f}"
    if not _num(last):
        return FAILED, row.get("error") or "it has no held-out loss (it stopped before its first evaluation)"
    probe_base, probe = row.get("probe_score_base"), row.get("probe_score")
    forgot = _num(probe_base) and _num(probe) and probe_base > 0 and probe_base - probe > FORGET_SHARE * probe_base
    learn_note = _learning_shortfall(row)
    if forgot:
        extra = f", and it also {learn_note}" if learn_note else ""
        return LOST_GENERAL, f"forgetting probe {probe_base:.2f} → {probe:.2f}{extra}"
    if learn_note:
        return DID_NOT_LEARN, learn_note
    return LEARNED, _learned_note(row)


def _learning_shortfall(row: dict) -> str:
    """Why the entrant did not learn (empty if it did)."""
    base, last = row["heldout_loss_first"], row["heldout_loss_last"]
    if _num(base) and base > 0 and base - last < LEARN_LOSS_SHARE * base:
        if last >= base:
            return f"did not lower the held-out loss ({base:.3f} → {last:.3f})"
        share = (base - last) / base
        shown = f"{share:.0%}" if share >= 0.01 else f"{share:.1%}"  # not "only 0%" for a loss that moved
        return (f"lowered the held-out loss by only {shown} ({base:.3f} → {last:.3f}; learning needs "
                f"{LEARN_LOSS_SHARE:.0%})")
    task_base, task = row.get("task_score_base"), row.get("task_score_adapted")
    if _num(task_base) and _num(task) and task_base < 1 and task - task_base < LEARN_TASK_SHARE * (1 - task_base):
        return (f"raised the task score only from {task_base:.2f} to {task:.2f} (learning needs "
                f"+{LEARN_TASK_SHARE * (1 - task_base):.2f})")
    return ""


def _learned_note(row: dict) -> str:
    base, last = row["heldout_loss_first"], row["heldout_loss_last"]
    parts = [f"held-out loss {base:.3f} → {last:.3f}" if _num(base) else f"held-out loss {last:.3f}"]
    if _num(row.get("task_score_adapted")) and _num(row.get("task_score_base")):
        parts.append(f"task score {row['task_score_base']:.2f} → {row['task_score_adapted']:.2f}")
    return ", ".join(parts)


def judge_all(table: list[dict]) -> None:
    """Adds "verdict" and "verdict_reason" to every row."""
    for row in table:
        row["verdict"], row["verdict_reason"] = judge(row)


def tie_margin(quality: str, best: float, questions: int) -> float:
    """How far from the best a value may be and still tie with it (the race's noise on this axis)."""
    if quality == "heldout_loss_last":
        return TIE_LOSS_SHARE * abs(best)
    return 1.0 / max(questions, 1) + 1e-9  # one question either way is noise


def close_margin(quality: str, best: float, questions: int) -> float:
    """How far from the best counts as "close": CLOSE_SHARE of it, and never less than the tie margin."""
    return max(CLOSE_SHARE * abs(best), tie_margin(quality, best, questions))


def gap(quality: str, value: float, best: float) -> float:
    """How much worse ``value`` is than ``best`` (0 for the best itself)."""
    return best - value if HIGHER_IS_BETTER[quality] else value - best


def contenders(table: list[dict], quality: str) -> list[dict]:
    """Kept entrants that learned and have a value on the quality axis: the only ones that may be crowned."""
    return [r for r in table if r.get("kept", True) and r.get("verdict") == LEARNED and _num(r.get(quality))]


def verdict(table: list[dict], quality: str = "heldout_loss_last", cost: str = "trainable_params",
            questions: int = 8) -> dict:
    """{"best": [names tied for the best], "winner": a name or None (a tie has no single winner),
    "cheapest_close": a name or None, "sentences": [...]} from rows judged by ``judge_all``.
    ``questions``: how many questions the quality's score is a share of (a one-question difference is noise)."""
    pool = contenders(table, quality)
    words = QUALITY_WORDS[quality]
    if not pool:
        return {"best": [], "winner": None, "cheapest_close": None,
                "sentences": [f"No entrant learned in this budget, so no entrant is crowned on the {words}."]}
    pick = max if HIGHER_IS_BETTER[quality] else min
    best_value = pick(r[quality] for r in pool)
    tie = tie_margin(quality, best_value, questions)
    tied = sorted((r for r in pool if gap(quality, r[quality], best_value) <= tie),
                  key=lambda r: gap(quality, r[quality], best_value))
    names = [r["name"] for r in tied]
    fmt = "{:.3f}" if quality == "heldout_loss_last" else "{:.2f}"
    noise = (f"within {TIE_LOSS_SHARE:.0%} of each other, closer than this race can tell apart"
             if quality == "heldout_loss_last" else "at most one question apart, closer than this race can tell apart")
    if len(tied) == 1:
        sentences = [f"Best {words}: {names[0]} ({fmt.format(tied[0][quality])})."]
    else:
        listed = ", ".join(f"{r['name']} ({fmt.format(r[quality])})" for r in tied)
        sentences = [f"A tie for the best {words}: {listed} — {noise}."]
    near = close_margin(quality, best_value, questions)
    close = [r for r in pool if gap(quality, r[quality], best_value) <= near and _num(r.get(cost)) and r[cost] > 0]
    cheapest = min(close, key=lambda r: r[cost]) if close else None
    reference = tied[0] if _num(tied[0].get(cost)) else None
    if cheapest is not None and reference is not None and cheapest is not reference and cheapest[cost] < reference[cost]:
        within = gap(quality, cheapest[quality], best_value)
        how = (f"within {within / abs(best_value):.0%} of the best {words}" if quality == "heldout_loss_last"
               else f"within {within:.2f} of the best {words}")
        sentences.append(f"Close for far less: {cheapest['name']} gets {how} ({fmt.format(cheapest[quality])}) "
                         f"for {_cost_comparison(cheapest, reference)}.")
    elif cheapest is not None:
        sentences.append(f"No learned entrant within {CLOSE_SHARE:.0%} of the best is cheaper than "
                         f"{cheapest['name']}.")
        priced = [r for r in pool if _num(r.get(cost)) and r[cost] > 0]
        thrifty = min(priced, key=lambda r: r[cost]) if priced else None
        if thrifty is not None and reference is not None and thrifty[cost] < reference[cost]:
            behind = gap(quality, thrifty[quality], best_value)
            how = (f"a {behind / abs(best_value):.0%} higher {words}" if quality == "heldout_loss_last"
                   else f"a {words} {behind:.2f} lower")
            sentences.append(f"The cheapest that learned, {thrifty['name']}, has {how} "
                             f"({fmt.format(thrifty[quality])}) for {_cost_comparison(thrifty, reference)}.")
    return {"best": names, "winner": names[0] if len(names) == 1 else None,
            "cheapest_close": cheapest["name"] if cheapest is not None else None, "sentences": sentences}


def fraction(part: float, whole: float) -> str:
    """A share a person reads: "1/50" below a half, else a percentage."""
    share = part / whole
    if share < 0.5:
        return f"1/{round(1 / share):,}" if share > 0 else "none"
    return f"{share:.0%}"


def _cost_comparison(cheap: dict, reference: dict) -> str:
    parts = []
    if _num(cheap.get("trainable_params")) and _num(reference.get("trainable_params")) and reference["trainable_params"]:
        parts.append(f"{fraction(cheap['trainable_params'], reference['trainable_params'])} of "
                     f"{reference['name']}'s trainable parameters")
    if _num(cheap.get("peak_memory_bytes")) and _num(reference.get("peak_memory_bytes")):
        parts.append(f"{fraction(cheap['peak_memory_bytes'], reference['peak_memory_bytes'])} of its peak memory")
    if _num(cheap.get("train_seconds")) and _num(reference.get("train_seconds")):
        parts.append(f"{fraction(cheap['train_seconds'], reference['train_seconds'])} of its training time")
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] if parts else "less"


def by_verdict(table: list[dict]) -> list[str]:
    """One sentence per verdict other than "learned", naming every entrant that got it and why."""
    sentences = []
    for key, lead in ((DID_NOT_LEARN, "Did not learn in this budget"), (LOST_GENERAL, "Lost general knowledge"),
                      (DIVERGED, "Diverged"), (FAILED, "Failed")):
        hit = [r for r in table if r.get("kept", True) and r.get("verdict") == key]
        if hit:
            sentences.append(f"{lead}: " + "; ".join(f"{r['name']} — {r['verdict_reason']}" for r in hit) + ".")
    return sentences
