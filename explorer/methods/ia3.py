"""IA³ (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning"), built by PEFT.

A learned vector rescales a linear layer's output (keys, values) or, for feed-forward layers, its
input: `out` (or `in`) trainable entries per adapted layer. Defaults follow PEFT's per-architecture
table; Phi-3 has none there, so we scale its fused qkv output and its down-projection input.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, per_layer_term

FALLBACK = {"phi3": (["qkv_proj", "down_proj"], ["down_proj"])}


@dataclass
class IA3Options:
    target_modules: str = option("", "Comma-separated layers to rescale; empty = PEFT's defaults for this model.")
    feedforward_modules: str = option("", "Those of the targets whose input (not output) is rescaled; "
                                      "empty = PEFT's defaults.")


def _split(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def resolve(spec, options) -> tuple[list[str], list[str]]:
    """(targets, feedforward) as linear names of this architecture."""
    from peft.utils import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
    )
    from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

    arch = spec.arch
    names = [lin.name for lin in arch.linears]
    default_targets, default_ff = FALLBACK.get(arch.model_type, (TARGETS.get(arch.model_type, []),
                                                                 FEEDFORWARD.get(arch.model_type, [])))
    targets = _split(options.target_modules) or list(default_targets)
    feedforward = _split(options.feedforward_modules) or list(default_ff)
    if options.target_modules:
        missing = [t for t in targets if t not in names]
        if missing:
            raise ExplorerError(f"This model has no linear layer named {', '.join(missing)}; "
                                f"its linear layers are: {', '.join(names)}.")
    # PEFT silently skips default names the model lacks (Mixtral's fused experts have no 'w2').
    targets = [t for t in targets if t in names]
    feedforward = [f for f in feedforward if f in targets]
    if not targets:
        raise ExplorerError("IA³ has no layer to rescale in this model; list target_modules.")
    if options.feedforward_modules and set(_split(options.feedforward_modules)) - set(targets):
        raise ExplorerError("feedforward_modules must be a subset of target_modules.")
    return targets, feedforward


def terms(spec, options):
    arch = spec.arch
    targets, feedforward = resolve(spec, options)
    out = []
    for name in targets:
        lin = arch.linear(name)
        size, side = (lin.in_features, "input") if name in feedforward else (lin.out_features, "output")
        out.append(per_layer_term(name, size, arch.layers, f"{size} ({side} scale)"))
    return out


def adaptation(spec, options) -> Adaptation:
    targets, feedforward = resolve(spec, options)
    return Adaptation(ia3_out=frozenset(t for t in targets if t not in feedforward), ia3_in=frozenset(feedforward))


def apply(model, spec, options):
    from peft import IA3Config, get_peft_model

    targets, feedforward = resolve(spec, options)
    return get_peft_model(model, IA3Config(task_type="CAUSAL_LM", target_modules=targets,
                                           feedforward_modules=feedforward,
                                           fan_in_fan_out=spec.arch.model_type == "gpt2"))


METHOD = Method(
    name="ia3", title="IA³", where="activation scales (keys, values and the feed-forward activation)",
    explanation="Learns one vector per adapted layer that rescales its activations feature by feature: "
                "it reweights what the model already computes instead of adding new directions.",
    when_to_use="Very small datasets and very tight parameter budgets; it trains with high learning rates.",
    default_lr=3e-3, options_type=IA3Options, mergeable=True,
    merge_reason="Scaling a layer's output (or input) by a fixed vector equals scaling the rows (or "
                 "columns) of its weight, so the vector folds into W.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply,
    validate=lambda spec, options: resolve(spec, options), textbook="ia3")
