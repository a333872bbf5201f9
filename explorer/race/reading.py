"""A short reading of a race, computed from its results (no canned text): which entrant gives the most
quality per unit of each cost, where the rank sweep stops improving, and, for each of the chapter's claims a
race can test (explorer.costs.textbook.OUTCOME_CLAIMS), whether this race supports it, with the numbers.

"Improvement" is the fall of the held-out loss from the base model's (the race scores the base once). A
claim is only judged when its entrants finished; otherwise the reading says what is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..costs.textbook import OUTCOME_CLAIMS, OutcomeClaim
from ..human import human_bytes, human_number
from ..methods import METHODS
from .results import COSTS

SIMILAR_SIZE = 4.0       # "similar parameter counts": within a factor of 4
LOSS_TOLERANCE = 0.01    # 1% of the loss: closer than this is a tie


@dataclass
class Verdict:
    key: str
    quote: str
    verdict: str     # "supported", "not supported", "cannot tell"
    numbers: str


def _finished(table: list[dict]) -> list[dict]:
    return [r for r in table if r["kept"] and r["state"] == "done" and isinstance(r["heldout_loss_last"], float)]


def improvement(row: dict) -> float | None:
    first, last = row["heldout_loss_first"], row["heldout_loss_last"]
    return first - last if isinstance(first, float) and isinstance(last, float) else None


def _of(table: list[dict], method: str) -> list[dict]:
    return [r for r in table if r["method"] == method]


def sweep(table: list[dict], method: str) -> list[dict]:
    """The entrants of ``method`` that differ only in their rank r, sorted by r (its default rank included)."""
    default_r = getattr(METHODS[method].parse_options({}), "r", None)
    chosen = [r for r in _of(table, method) if set(r["options"]) <= {"r"}]
    return sorted(chosen, key=lambda r: int(r["options"].get("r", default_r or 0)))


def _rank(row: dict) -> int:
    return int(row["options"].get("r", getattr(METHODS[row["method"]].parse_options({}), "r", 0)))


def best_per_cost(table: list[dict]) -> list[str]:
    lines = []
    done = [r for r in _finished(table) if (improvement(r) or 0) > 0]
    for cost, label in COSTS.items():
        priced = [r for r in done if isinstance(r.get(cost), (int, float)) and r[cost] > 0]
        if not priced:
            continue
        best = max(priced, key=lambda r: improvement(r) / r[cost])
        shown = human_bytes(best[cost]) if cost == "peak_memory_bytes" else human_number(best[cost])
        lines.append(f"Per unit of {label}: {best['name']} lowers the held-out loss by {improvement(best):.3f} for "
                     f"{shown} ({improvement(best) / best[cost]:.3g} per unit).")
    return lines


def rank_sweep(table: list[dict], method: str) -> str | None:
    rows = [r for r in sweep(_finished(table), method)]
    if len(rows) < 2:
        return None
    best = min(r["heldout_loss_last"] for r in rows)
    enough = next(r for r in rows if r["heldout_loss_last"] <= best * (1 + 0.02))
    losses = ", ".join(f"r={_rank(r)}: {r['heldout_loss_last']:.3f}" for r in rows)
    return (f"Rank sweep ({METHODS[method].title}): {losses}. It stops improving at r={_rank(enough)} "
            f"(within 2% of the best held-out loss, {best:.3f}).")


def judge(claim: OutcomeClaim, table: list[dict]) -> Verdict:
    done = _finished(table)
    subject = _of(done, claim.subject)
    others = [r for m in claim.others for r in _of(done, m)]
    missing = [m for m in (claim.subject, *claim.others) if not _of(done, m)]

    def verdict(ok: bool, numbers: str) -> Verdict:
        return Verdict(claim.key, claim.quote, "supported" if ok else "not supported", numbers)

    if missing and claim.test != "low_rank":
        return Verdict(claim.key, claim.quote, "cannot tell",
                       f"needs finished entrants of {', '.join(METHODS[m].title for m in missing)}")
    if claim.test == "matches":
        pairs, ok = [], True
        for other in others:
            if not isinstance(other["trainable_params"], int):
                continue
            near = min(subject, key=lambda r: abs(math.log(max(r["trainable_params"] or 1, 1) /
                                                           max(other["trainable_params"], 1))))
            ratio = max(near["trainable_params"], 1) / max(other["trainable_params"], 1)
            wins = near["heldout_loss_last"] <= other["heldout_loss_last"] * (1 + LOSS_TOLERANCE)
            ok &= wins
            size = "similar" if 1 / SIMILAR_SIZE <= ratio <= SIMILAR_SIZE else f"{ratio:.3g}× the"
            pairs.append(f"{near['name']} ({human_number(near['trainable_params'])} parameters, {size} count) "
                         f"{near['heldout_loss_last']:.3f} vs {other['name']} "
                         f"({human_number(other['trainable_params'])}) {other['heldout_loss_last']:.3f}")
        return verdict(ok, "; ".join(pairs))
    gain = max((improvement(r) or 0) for r in subject)
    best_other = max(others, key=lambda r: improvement(r) or 0) if others else None
    if claim.test in ("weaker", "close"):
        other_gain = improvement(best_other) or 0
        share = gain / other_gain if other_gain > 0 else float("inf")
        ok = share < claim.threshold if claim.test == "weaker" else share >= claim.threshold
        return verdict(ok, f"{METHODS[claim.subject].title} lowers the held-out loss by {gain:.3f}, "
                           f"{best_other['name']} by {other_gain:.3f} ({share:.0%} of it; the claim needs "
                           f"{'under' if claim.test == 'weaker' else 'at least'} {claim.threshold:.0%})")
    if claim.test == "low_rank":
        rows = sweep(done, claim.subject)
        low = [r for r in rows if _rank(r) <= 4]
        if not low or len(rows) < 2:
            return Verdict(claim.key, claim.quote, "cannot tell", "needs a LoRA rank sweep with a rank of 4 or less")
        best = min(rows, key=lambda r: r["heldout_loss_last"])
        lowest = min(low, key=lambda r: r["heldout_loss_last"])
        gap = lowest["heldout_loss_last"] / best["heldout_loss_last"] - 1
        return verdict(gap <= claim.threshold, f"best low rank r={_rank(lowest)}: {lowest['heldout_loss_last']:.3f}; "
                                               f"best rank r={_rank(best)}: {best['heldout_loss_last']:.3f} "
                                               f"({gap:+.1%}; the claim allows {claim.threshold:.0%})")
    if claim.test == "forgets_more":
        base = next((r["probe_score_base"] for r in done if isinstance(r["probe_score_base"], float)), None)
        probed = [r for r in subject + others if isinstance(r["probe_score"], float)]
        if base is None or not _of(probed, claim.subject) or len(probed) < 2:
            return Verdict(claim.key, claim.quote, "cannot tell", "needs the forgetting probe (probe_examples > 0)")
        drop = {r["name"]: base - r["probe_score"] for r in probed}
        subject_drop = max(drop[r["name"]] for r in _of(probed, claim.subject))
        other_drop = min(drop[r["name"]] for r in probed if r["method"] != claim.subject)
        numbers = (f"probe score of the base {base:.2f}; " +
                   ", ".join(f"{name} {base - d:.2f}" for name, d in drop.items()))
        if subject_drop < claim.threshold and other_drop < claim.threshold:
            return Verdict(claim.key, claim.quote, "not supported", numbers + ": nothing was forgotten at this budget")
        return verdict(subject_drop >= other_drop + claim.threshold, numbers)
    raise ValueError(f"unknown claim test {claim.test!r}")


def reading(table: list[dict]) -> dict:
    """{"best_per_cost": [...], "rank_sweeps": [...], "claims": [Verdict...]} from the race's rows."""
    sweeps = [line for m in dict.fromkeys(r["method"] for r in table)
              if (line := rank_sweep(table, m)) and len(sweep(table, m)) >= 3]
    return {"best_per_cost": best_per_cost(table), "rank_sweeps": sweeps,
            "claims": [judge(claim, table) for claim in OUTCOME_CLAIMS]}


def as_markdown(table: list[dict]) -> str:
    found = reading(table)
    lines = ["**What this race shows** (computed from the table; a claim is judged only on finished entrants)"]
    lines += [f"- {line}" for line in found["best_per_cost"] + found["rank_sweeps"]]
    lines.append("\n**The chapter's claims against this race** (quotes are the chapter's words, labelled as claims)")
    for v in found["claims"]:
        lines.append(f"- *Claim:* “{v.quote}” — **{v.verdict}**: {v.numbers}.")
    return "\n".join(lines)
