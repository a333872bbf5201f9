"""The Learn tab's content, computed: one card per method and a side-by-side comparison of two methods.

Nothing here is a second implementation: every number comes from explorer.calculator (the same formulas
the Calculator shows and tests check against PEFT), the diagram from explorer.learn.diagram, the chapter's
figures checked by explorer.calculator.claims, and run outcomes from the saved runs in models_cache/runs.
"""

from __future__ import annotations

from .. import calculator
from ..calculator.claims import claims_of
from ..costs import memory
from ..errors import ExplorerError
from ..methods import METHODS
from ..methods import get as get_method
from ..models import specs as model_specs
from ..train import runs


def _calc(spec, method: str, settings=None):
    return calculator.calculate(spec, method, METHODS[method].parse_options({}), settings or memory.TrainSettings(),
                                exact_mode="skip")


def claims_with_exact(method: str) -> list[dict]:
    """The chapter's figures for this method (Llama-2-7B) beside the exact values, labelled as claims."""
    return [{"what": c.claim.what, "claimed": c.claim.claimed, "exact": c.exact, "quantity": c.claim.quantity,
             "ratio": c.ratio, "reason": c.claim.reason} for c in claims_of(METHODS[method])]


def method_card(spec, method: str, settings=None) -> dict:
    """What a learner sees about one method on one model (default options)."""
    from .diagram import block_svg

    m = METHODS[method]
    try:
        r = _calc(spec, method, settings)
    except ExplorerError as error:  # e.g. IA³ on a family without default targets
        return {"method": method, "title": m.title, "where": m.where, "explanation": m.explanation,
                "when_to_use": m.when_to_use, "mergeable": m.mergeable, "merge_reason": m.merge_reason, "merge_summary": m.merge_summary,
                "error": str(error), "claims": claims_with_exact(method), "literature": list(m.literature)}
    total = r.total_params_with_method
    f = r.flops
    return {
        "method": method, "title": m.title, "where": m.where, "explanation": m.explanation,
        "when_to_use": m.when_to_use, "mergeable": m.mergeable, "merge_reason": m.merge_reason, "merge_summary": m.merge_summary,
        "options": {k: v for k, v in r.as_json().get("options", {}).items()},
        "trainable": r.trainable_formula, "trainable_percent": 100 * r.trainable_formula / total,
        "training_memory_bytes": r.training.total_bytes,
        "flop_overhead_unmerged_percent": 100 * f.inference_overhead_per_token_unmerged / f.base_forward_per_token,
        "flop_overhead_merged_percent": 100 * f.inference_overhead_per_token_merged / f.base_forward_per_token,
        "svg": block_svg(spec.arch, m.adaptation(spec, r.options), m.title),
        "claims": claims_with_exact(method), "literature": list(m.literature),
    }


def guide(model: str, settings=None) -> list[dict]:
    spec = model_specs.resolve(model)
    return [method_card(spec, name, settings) for name in METHODS]


def last_runs(method: str, limit: int = 3) -> list[dict]:
    """Outcomes of the newest finished runs of this method (any model), from their summaries."""
    rows = []
    for run in runs.list_runs():
        if run.config is None or run.config.method != method or run.state != "done" or not run.summary:
            continue
        summary = run.summary
        rows.append({"run_id": run.run_id, "model": run.config.model, "dataset": run.dataset_label,
                     "steps": summary.get("steps"), "eval_loss_first": summary.get("eval_loss_first"),
                     "eval_loss_last": summary.get("eval_loss_last"),
                     "task_score_base": summary.get("task_score_base"),
                     "task_score_adapted": summary.get("task_score_adapted"),
                     "seconds": summary.get("seconds")})
        if len(rows) >= limit:
            break
    return rows


def side_by_side(model: str, method_a: str, method_b: str, settings=None) -> dict:
    """Two methods on the same model: parameters, memory, FLOP overhead, merging, and real run outcomes."""
    for name in (method_a, method_b):
        get_method(name)  # an unknown name, or one not offered, said in one line
    spec = model_specs.resolve(model)
    cards = {name: method_card(spec, name, settings) for name in (method_a, method_b)}
    return {"model": spec.name, "cards": cards, "runs": {name: last_runs(name) for name in (method_a, method_b)}}


__all__ = ["guide", "method_card", "side_by_side", "last_runs", "claims_with_exact"]
