"""Forgetting you can dial back: a LoRA run's task score and forgetting-probe score at several settings.

Two dials, each measured with real greedy generations on the run's held-out rows and the forgetting probe's
general questions (explorer.data.probe), one batched generation per setting:

- adapter strength: PEFT's ``rescale_adapter_scale`` multiplies every LoRA layer's update, W + s·(alpha/r)·B·A
  (explorer.compare.variants.adapter_strength); 0 is the base model exactly, 1 the trained adapter.
- intruder dimensions: PEFT's post-hoc ``reduce_intruder_dimension`` (peft/tuners/lora/intruders.py; Shuttleworth
  et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence", arXiv 2410.21228). It finds the top
  singular directions of W + ΔW that resemble none of W's ("intruder dimensions") and shrinks them. Its
  ``mitigation_lambda`` enters PEFT's code as W + ΔW + (λ − 1)·intruders, so λ = 1 leaves the update as it was
  and λ = 0 removes the intruder directions whole (PEFT's docstring words it the other way; the code decides).

The result is a list of points (setting, task score, probe score): how much general knowledge comes back for
how much of the task. Pure logic: no gradio.
"""

from __future__ import annotations

import math

from .. import scored
from ..data import probe, scores, sources
from ..errors import ExplorerError
from ..train.runs import open_run
from . import variants

DEFAULT_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
MAX_SETTINGS = 9
INTRUDER_ADAPTER = "dial_intruder_reduced"


def _numbers(values, what: str, low: float, high: float) -> list[float]:
    """A list of distinct numbers from ``low`` to ``high`` (a "0,0.5,1" text or a sequence), in the given order."""
    if isinstance(values, str):
        parts = [p.strip() for p in values.split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ExplorerError(f"{what} must be numbers separated by commas (e.g. 0,0.5,1), got {','.join(parts)!r}.")
    out = []
    for v in values or ():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low <= v <= high:
            raise ExplorerError(f"each {what[:-1]} must be a number from {low:g} to {high:g}, got {v!r}.")
        if float(v) not in out:
            out.append(float(v))
    if len(out) > MAX_SETTINGS:
        raise ExplorerError(f"{len(out)} {what} given; at most {MAX_SETTINGS} (each one is a round of generation).")
    return out


def check_strengths(values) -> list[float]:
    """Adapter strengths from 0 to 1 (dialling back, not extrapolating); 1 is always measured: the reference."""
    chosen = _numbers(values, "strengths", 0.0, 1.0)
    return sorted(set(chosen) | {1.0})


def check_lambdas(values) -> list[float]:
    """PEFT's mitigation_lambda values, from 0 (intruder directions removed) to 1 (unchanged)."""
    return sorted(_numbers(values, "intruder lambdas", 0.0, 1.0), reverse=True)


def intruder_support() -> str | None:
    """None when the installed PEFT ships reduce_intruder_dimension, else the one line saying it does not."""
    try:
        from peft.tuners.lora.intruders import reduce_intruder_dimension  # noqa: F401
    except ImportError:
        import peft

        return (f"PEFT {peft.__version__} has no reduce_intruder_dimension (it came in a later release): "
                "only the adapter strength dial is measured.")
    return None


def _check_run(run, lambdas: list[float]) -> None:
    method = run.method
    if not method.strength:
        raise ExplorerError(f"Run {run.run_id} trained {method.title}, which has no adapter scale to dial back: "
                            "the forgetting dial needs a LoRA-family run (LoRA, DoRA, rsLoRA...).")
    if lambdas and (method.family != "lora" or method.quantized_base):
        raise ExplorerError(f"PEFT's reduce_intruder_dimension needs a LoRA adapter on float weights; {method.title} "
                            "is not one: leave the intruder lambdas empty and dial the strength only.")


def _measure(model, s, asked, tokens: int) -> dict:
    """One batched greedy generation of every prompt: its replies (held-out rows, then probe questions) and scores."""
    replies = asked.ask(model, s.tokenizer, tokens, s.device)
    task_score, probe_score = asked.scores(replies)
    return {"task_score": task_score, "probe_score": probe_score,
            "probe_right": round(probe_score * len(asked.chosen)), "replies": replies}


def _point(kind: str, value: float, measured: dict, **extra) -> dict:
    label = f"strength {value:g}" if kind == "strength" else f"intruders λ {value:g}"
    return {"setting": label, "kind": kind, "value": value, **measured, **extra}


def _intruder_point(s, asked, tokens: int, lam: float) -> dict:
    """Apply reduce_intruder_dimension as a second adapter, measure, then drop it: the session is left as it was."""
    from peft.tuners.lora.intruders import reduce_intruder_dimension

    model, trained = s.adapted, s.adapted.active_adapter
    log: list[str] = []
    try:
        reduce_intruder_dimension(model, old_adapter_name=trained, new_adapter_name=INTRUDER_ADAPTER,
                                  mitigation_lambda=lam, logging_sink=lambda *a, **k: log.append(" ".join(map(str, a))))
        measured = _measure(model, s, asked, tokens)
    finally:
        model.set_adapter(trained)
        if INTRUDER_ADAPTER in model.peft_config:
            model.delete_adapter(INTRUDER_ADAPTER)
    layers = sum(1 for line in log if ": Intruders:" in line or ": No intruders" in line)
    with_intruders = sum(1 for line in log if ": Intruders:" in line)
    return _point("intruder", lam, measured, layers_with_intruders=with_intruders, lora_layers=layers)


def dial(run_id: str, strengths=DEFAULT_STRENGTHS, intruder_lambdas=(), examples: int = 4, probe_count: int = 10,
         max_new_tokens: int = 16) -> dict:
    """Task score and probe score at each setting (greedy, ``examples`` held-out rows, the probe's first
    ``probe_count`` questions, ``max_new_tokens`` new tokens); also the base model's probe score."""
    from ..generate import check_max_new_tokens

    run = open_run(run_id)
    strengths = check_strengths(strengths)
    lambdas = check_lambdas(intruder_lambdas)
    _check_run(run, lambdas)
    note = intruder_support() if lambdas else None
    if note:
        lambdas = []
    if not isinstance(examples, int) or isinstance(examples, bool) or not 1 <= examples <= 64:
        raise ExplorerError(f"held-out examples must be a whole number from 1 to 64, got {examples!r}.")
    if not isinstance(probe_count, int) or isinstance(probe_count, bool) \
            or not 1 <= probe_count <= len(probe.questions()):
        raise ExplorerError(f"probe questions must be a whole number from 1 to {len(probe.questions())}, "
                            f"got {probe_count!r}.")
    tokens = check_max_new_tokens(max_new_tokens)
    task = scores.task_for(run.config.dataset, run.config.score)
    if task is None:
        raise ExplorerError(f"Run {run.run_id}'s data has no task score (choose a score when uploading): the dial "
                            "needs one for its x axis.")
    _, rows = sources.load_dataset(run.config.dataset)
    rows = rows[:examples]
    asked = scored.ScoredQuestions(rows, task, probe_count)  # the same prompts at every setting
    s = variants.session(run_id)
    config = s.adapted.peft_config[s.adapted.active_adapter]
    if lambdas and str(config.peft_type.value) != "LORA":
        raise ExplorerError(f"PEFT's reduce_intruder_dimension supports LoRA adapters only; run {run.run_id}'s is "
                            f"{config.peft_type.value}: dial the strength only.")
    if lambdas and getattr(config, "use_dora", False):
        # The new adapter PEFT adds gets DoRA magnitudes initialised from the base weights, not the trained ones
        # (intruders.py copies only lora_A and lora_B), so its numbers would not be this run's.
        raise ExplorerError(f"Run {run.run_id} is DoRA: PEFT's reduce_intruder_dimension copies only LoRA's A and B, "
                            "not DoRA's trained magnitudes; dial the strength only.")
    points = []
    with s.lock:  # scaling and adding adapters change the shared session's state: one measurement at a time
        base = _measure(s.base, s, asked, tokens)
        for value in strengths:
            with variants.adapter_strength(s.adapted, value):
                points.append(_point("strength", value, _measure(s.adapted, s, asked, tokens)))
        for lam in lambdas:
            points.append(_intruder_point(s, asked, tokens, lam))
    result = {"run_id": run.run_id, "method": run.method.name, "model": run.config.model,
              "dataset": run.config.dataset, "task": task.name, "examples": len(rows), "probe_count": probe_count,
              "max_new_tokens": tokens, "decoding": "greedy",
              "prompts": asked.prompts, "base": base, "points": points, "intruder_note": note}
    result["reading"] = reading(points, probe_count, base_probe_right=result["base"]["probe_right"])
    return result


def reading(points: list[dict], probe_count: int, base_probe_right: int | None = None) -> str:
    """One sentence from the numbers: the dialled-back setting that answers the most general questions (ties:
    the one keeping more of the task), the share of the full-strength task score it keeps, and full strength's
    own count."""
    full = next((p for p in points if p["kind"] == "strength" and p["value"] == 1.0), None)
    if full is None:
        raise ExplorerError("the dial's points have no full-strength (strength 1) point to compare with.")
    base_text = "" if base_probe_right is None else f" The base model answers {base_probe_right}."
    dialled = [p for p in points if p is not full and not (p["kind"] == "strength" and p["value"] == 0.0)]
    if not dialled:
        return (f"At full strength it scores {full['task_score']:.2f} on the task and answers {full['probe_right']} "
                f"of {probe_count} general questions.{base_text}")
    best = max(dialled, key=lambda p: (p["probe_right"], p["task_score"]))
    if best["probe_right"] <= full["probe_right"]:
        return (f"No dialled-back setting answers more general questions than full strength ({full['probe_right']} "
                f"of {probe_count}): on this run, dialling back buys no general knowledge back.{base_text}")
    if full["task_score"] > 0:
        kept = f"keeps {best['task_score'] / full['task_score']:.2f} of the task"
    else:
        kept = (f"scores {best['task_score']:.2f} on the task (full strength scores 0, so there is no task share "
                "to keep)")
    return (f"At {best['setting']} it {kept} and answers {best['probe_right']} of {probe_count} general questions "
            f"(full strength: {full['probe_right']}).{base_text}")
