"""The composition experiments side by side, and what they say against the chapter's claim.

The chapter, for composable personas: "prepend persona 1 prefix + persona 2 prefix … composes more cleanly than
stacked LoRAs" (prefix tuning), and soft prompts concatenate the same way. Each experiment of
explorer.compare.compose is one row here; the reading compares, per method, its best combination's worst
interference (the larger loss of the two tasks against each task's own adapter). Pure logic: no gradio.
"""

from __future__ import annotations

from ..methods import METHODS

CLAIM = ("The textbook section claims prefixes (and soft prompts) compose more cleanly than stacked LoRA adapters: "
         "\"prepend persona 1 prefix + persona 2 prefix\".")


def row(result: dict) -> dict:
    """One experiment as a row: method, how, density, weights, the combination's score on each task, its own
    adapters' scores, and the interference on each task and at worst."""
    datasets = list(dict.fromkeys(result["datasets"]))
    known = [v for v in result["interference"].values() if v is not None]
    return {"method": result["method"], "title": METHODS[result["method"]].title, "how": result["how"],
            "density": result["combined"].get("density"), "weights": list(result["weights"]),
            "runs": list(result["runs"]), "datasets": datasets,
            "combined": {d: result["scores"]["combined"][d] for d in datasets},
            "own": {d: (None if result["interference"][d] is None else
                        result["scores"]["combined"][d] - result["interference"][d]) for d in datasets},
            "interference": dict(result["interference"]), "worst": min(known) if known else None}


def add(rows: list[dict], result: dict) -> list[dict]:
    """The rows with this experiment's row added (the same runs, method, way and settings replace the old row)."""
    new = row(result)
    key = lambda r: (r["runs"], r["how"], r["density"], r["weights"])  # noqa: E731
    return [r for r in rows if key(r) != key(new)] + [new]


def reading(rows: list[dict]) -> str:
    """Measured against claimed, in plain sentences (markdown)."""
    if not rows:
        return f"{CLAIM} Nothing measured yet: combine two runs above."
    best = {}
    for r in rows:
        if r["worst"] is None:
            continue
        if r["method"] not in best or r["worst"] > best[r["method"]]["worst"]:
            best[r["method"]] = r
    if not best:
        return f"{CLAIM} The runs measured so far have no automatic task score (uploaded data): compare the replies."
    lines = [CLAIM, "", "Measured on this machine (each method's best combination so far; interference is the "
                        "combination's score minus each task's own adapter, at its worse task):"]
    for method, r in best.items():
        tasks = ", ".join(f"{d} {r['combined'][d]:.2f} (own {r['own'][d]:.2f})" for d in r["datasets"]
                          if r["combined"][d] is not None and r["own"][d] is not None)
        lines.append(f"- {r['title']} ({r['how']}): {tasks}; interference at worst {r['worst']:+.2f}.")
    untrained = [r for r in best.values() if all(not r["own"][d] for d in r["datasets"])]
    lora = [r for r in best.values() if METHODS[r["method"]].family == "lora"]
    rest = [r for r in best.values() if METHODS[r["method"]].family != "lora"]
    lines.append("")
    if untrained:
        lines.append("Some runs score 0 on their own tasks, so they have nothing to lose yet: train longer before "
                     "reading interference.")
    if lora and rest:
        others = ", ".join(f"{r['title']} {r['worst']:+.2f}" for r in rest)
        cleaner = [r for r in rest if r["worst"] > lora[0]["worst"]]
        verdict = ("supports the claim" if len(cleaner) == len(rest) else
                   "does not support the claim" if not cleaner else "supports it for " +
                   " and ".join(r["title"] for r in cleaner) + " only")
        lines.append(f"Against LoRA's best ({lora[0]['how']}, {lora[0]['worst']:+.2f}): {others}. On these runs "
                     f"and examples this {verdict}; a few held-out examples per task make each score coarse.")
    else:
        lines.append("Measure LoRA and at least one of prompt or prefix tuning to compare them with the claim.")
    return "\n".join(lines)
