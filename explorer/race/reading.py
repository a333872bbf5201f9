"""A short reading of a race, computed from its results (no canned text), verdict first: which entrant won on
the chosen quality and which came close for far less (explorer.race.verdicts), every entrant that did not learn,
forgot, diverged or failed, and why; then efficiency in units a person reads (per million trainable parameters,
per GiB of peak memory, per minute of training) among the entrants that learned; where the rank sweep stops
improving; and, for each claim of the textbook section a race can test (explorer.costs.textbook.OUTCOME_CLAIMS),
whether this race supports it, judged on the same numbers the table shows, every entrant that bears on it listed.

"Improvement" is the fall of the held-out loss from the base model's (the race scores the base once). A
claim is only judged when its entrants finished; otherwise the reading says what is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..costs.textbook import OUTCOME_CLAIMS, SECTION, SECTION_NAMED, OutcomeClaim
from ..human import human_bytes, human_number
from ..methods import METHODS
from . import verdicts

SIMILAR_SIZE = 4.0       # "similar parameter counts": within a factor of 4
LOSS_TOLERANCE = 0.01    # 1% of the loss: closer than this is a tie
EFFICIENCY = (("trainable_params", 1e6, "per million trainable parameters", human_number),
              ("peak_memory_bytes", 2 ** 30, "per GiB of peak memory", human_bytes),
              ("train_seconds", 60, "per minute of training", lambda s: f"{s / 60:.1f} min"))


@dataclass
class Verdict:
    key: str
    quote: str
    verdict: str     # "supported", "not supported", "cannot tell"
    numbers: str


def _finished(table: list[dict]) -> list[dict]:
    return [r for r in table if r["kept"] and r["state"] == "done" and isinstance(r["heldout_loss_last"], float)
            and math.isfinite(r["heldout_loss_last"])]


def improvement(row: dict) -> float | None:
    first, last = row["heldout_loss_first"], row["heldout_loss_last"]
    return first - last if isinstance(first, float) and isinstance(last, float) else None


def task_rise(row: dict) -> float | None:
    base, adapted = row.get("task_score_base"), row.get("task_score_adapted")
    return adapted - base if isinstance(base, float) and isinstance(adapted, float) else None


def _of(table: list[dict], method: str) -> list[dict]:
    return [r for r in table if r["method"] == method]


def sweep(table: list[dict], method: str) -> list[dict]:
    """The entrants of ``method`` that differ only in their rank r, sorted by r (its default rank included)."""
    default_r = getattr(METHODS[method].parse_options({}), "r", None)
    chosen = [r for r in _of(table, method) if set(r["options"]) <= {"r"}]
    return sorted(chosen, key=lambda r: int(r["options"].get("r", default_r or 0)))


def _rank(row: dict) -> int:
    return int(row["options"].get("r", getattr(METHODS[row["method"]].parse_options({}), "r", 0)))


def efficiency(table: list[dict]) -> list[str]:
    """Held-out loss improvement per unit of each cost, among the entrants that learned (two at least)."""
    learned = [r for r in _finished(table) if r.get("verdict") == verdicts.LEARNED and (improvement(r) or 0) > 0]
    if len(learned) < 2:
        return []
    lines = []
    for cost, unit, words, shown in EFFICIENCY:
        priced = [r for r in learned if isinstance(r.get(cost), (int, float)) and r[cost] > 0]
        if len(priced) < 2:
            continue
        best = max(priced, key=lambda r: improvement(r) / r[cost])
        lines.append(f"Most held-out loss improvement {words}, among the entrants that learned: {best['name']} "
                     f"({improvement(best):.3f} lower for {shown(best[cost])}: "
                     f"{improvement(best) / (best[cost] / unit):.3g} {words}).")
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


def _shares(subject: list[dict], others: list[dict]) -> list[tuple[str, float, str, float, float]]:
    """(measure, the subject's best gain, the best other's name, its gain, share) on the held-out loss's fall
    and, where both are scored and the other rose, the task score's rise."""
    found = []
    for measure, gain_of in (("held-out loss fall", improvement), ("task score rise", task_rise)):
        gains = [g for r in subject if (g := gain_of(r)) is not None]
        rivals = [(g, r) for r in others if (g := gain_of(r)) is not None]
        if not gains or not rivals:
            continue
        other_gain, other = max(rivals, key=lambda pair: pair[0])
        if other_gain <= 0:
            continue
        found.append((measure, max(gains), other["name"], other_gain, max(gains) / other_gain))
    return found


def judge(claim: OutcomeClaim, table: list[dict]) -> Verdict:
    done = _finished(table)
    subject = _of(done, claim.subject)
    others = [r for m in claim.others for r in _of(done, m)]
    missing = [m for m in (claim.subject, *claim.others) if not _of(done, m)]

    def verdict(ok: bool, numbers: str) -> Verdict:
        return Verdict(claim.key, claim.quote, "supported" if ok else "not supported", numbers)

    if missing and claim.test not in ("low_rank", "forgets_more"):
        return Verdict(claim.key, claim.quote, "cannot tell",
                       f"needs finished entrants of {', '.join(METHODS[m].title for m in missing)}")
    if claim.test in ("matches", "low_rank"):  # comparisons of what was learned: somebody must have learned
        compared = [*subject, *others] if claim.test == "matches" else sweep(done, claim.subject)
        if compared and all(r.get("verdict", verdicts.LEARNED) != verdicts.LEARNED for r in compared):
            return Verdict(claim.key, claim.quote, "cannot tell",
                           f"none of {', '.join(r['name'] for r in compared)} learned in this budget")
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
            pairs.append(f"held-out loss of {near['name']} ({human_number(near['trainable_params'])} parameters, "
                         f"{size} count) {near['heldout_loss_last']:.3f} vs {other['name']} "
                         f"({human_number(other['trainable_params'])}) {other['heldout_loss_last']:.3f}")
        return verdict(ok, "; ".join(pairs))
    if claim.test in ("weaker", "close"):
        shares = _shares(subject, others)
        if not shares:
            return Verdict(claim.key, claim.quote, "cannot tell", "no measure on which the others improved")
        parts = [f"{METHODS[claim.subject].title}'s {measure} {gain:.{3 if 'loss' in measure else 2}f}, "
                 f"{name}'s {other:.{3 if 'loss' in measure else 2}f} ({share:.0%} of it)"
                 for measure, gain, name, other, share in shares]
        if claim.test == "weaker":  # struggling on either measure the table shows is struggling
            ok = any(share < claim.threshold for *_, share in shares)
            need = f"the claim needs under {claim.threshold:.0%} on either"
        else:
            ok = all(share >= claim.threshold for *_, share in shares)
            need = f"the claim needs at least {claim.threshold:.0%} on each"
        return verdict(ok, "; ".join(parts) + f" — {need}")
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
        return _forgetting(claim, done)
    raise ValueError(f"unknown claim test {claim.test!r}")


def _forgetting(claim: OutcomeClaim, done: list[dict]) -> Verdict:
    """The subject against the others, with every probed entrant of the race listed (forgetting is not only the
    subject's), and those that lost general knowledge named."""
    base = next((r["probe_score_base"] for r in done if isinstance(r["probe_score_base"], float)), None)
    probed = [r for r in done if isinstance(r["probe_score"], float)]
    compared = [r for r in probed if r["method"] in (claim.subject, *claim.others)]
    if base is None or not _of(compared, claim.subject) or not [r for r in compared if r["method"] != claim.subject]:
        return Verdict(claim.key, claim.quote, "cannot tell", f"needs finished {METHODS[claim.subject].title} and "
                       f"{', '.join(METHODS[m].title for m in claim.others)} entrants with the forgetting probe "
                       "(probe_examples > 0)")
    drop = {r["name"]: base - r["probe_score"] for r in probed}
    subject_drop = max(drop[r["name"]] for r in _of(compared, claim.subject))
    other_drop = max(drop[r["name"]] for r in compared if r["method"] != claim.subject)
    numbers = (f"forgetting probe of the base model {base:.2f}; after training: " +
               ", ".join(f"{r['name']} {r['probe_score']:.2f}" for r in probed))
    lost = [r["name"] for r in probed if r.get("verdict") == verdicts.LOST_GENERAL or
            (r.get("verdict") is None and drop[r["name"]] > verdicts.FORGET_SHARE * base)]
    if lost:
        numbers += f"; lost general knowledge (the probe fell by more than half): {', '.join(lost)}"
    if subject_drop < claim.threshold and other_drop < claim.threshold:
        return Verdict(claim.key, claim.quote, "not supported",
                       numbers + f"; neither {METHODS[claim.subject].title} nor "
                                 f"{', '.join(METHODS[m].title for m in claim.others)} forgot at this budget")
    return Verdict(claim.key, claim.quote, "supported" if subject_drop >= other_drop + claim.threshold
                   else "not supported", numbers)


def reading(table: list[dict], quality: str = "heldout_loss_last", cost: str = "trainable_params",
            questions: int = 8) -> dict:
    """{"verdict": verdicts.verdict(...), "judged": [...], "efficiency": [...], "rank_sweeps": [...],
    "claims": [Verdict...]} from the race's rows (judged by explorer.race.verdicts.judge_all)."""
    if any("verdict" not in r for r in table):
        verdicts.judge_all(table)
    sweeps = [line for m in dict.fromkeys(r["method"] for r in table)
              if (line := rank_sweep(table, m)) and len(sweep(table, m)) >= 3]
    return {"verdict": verdicts.verdict(table, quality, cost, questions), "judged": verdicts.by_verdict(table),
            "efficiency": efficiency(table), "rank_sweeps": sweeps,
            "claims": [judge(claim, table) for claim in OUTCOME_CLAIMS]}


def claim_line(v: Verdict) -> str:
    return f"Claim: “{v.quote}” — {v.verdict}: {v.numbers}."


def sentences(found: dict) -> list[str]:
    """The reading as a list of sentences, in the page's order (the verdict first)."""
    return (found["verdict"]["sentences"] + found["judged"] + found["efficiency"] + found["rank_sweeps"] +
            [claim_line(v) for v in found["claims"]])


def verdict_markdown(found: dict) -> str:
    """The verdict and every entrant that did not learn, forgot, diverged or failed, with the rules."""
    lines = ["**Verdict** (computed from the table; only entrants that learned can win)"]
    lines += [f"- {line}" for line in found["verdict"]["sentences"] + found["judged"]]
    lines.append(f"\n*How entrants are judged.* {verdicts.RULES}")
    return "\n".join(lines)


def details_markdown(found: dict) -> str:
    """Efficiency, the rank sweep and the textbook section's claims judged."""
    lines = []
    if found["efficiency"] or found["rank_sweeps"]:
        lines.append("**Efficiency** (held-out loss improvement per unit of cost)")
        lines += [f"- {line}" for line in found["efficiency"] + found["rank_sweeps"]]
        lines.append("")
    lines.append(f"**Claims of {SECTION_NAMED} against this race** (the quotes are {SECTION}'s words, "
                 "labelled as claims; a claim is judged only on finished entrants)")
    for v in found["claims"]:
        lines.append(f"- *Claim:* “{v.quote}” — **{v.verdict}**: {v.numbers}.")
    return "\n".join(lines)


def as_markdown(table: list[dict], quality: str = "heldout_loss_last", cost: str = "trainable_params",
                questions: int = 8) -> str:
    found = reading(table, quality, cost, questions)
    return verdict_markdown(found) + "\n\n" + details_markdown(found)
