"""IA³ (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning"), built by PEFT.

A learned vector rescales a linear layer's output (keys, values) or, for feed-forward layers, its
input: `out` (or `in`) trainable entries per adapted layer. Defaults: PEFT's per-architecture table where
it has the model type; elsewhere the paper's choice read from the model's own graph: the key and value
projections (or the fused projection that makes them) and the layers that read the MLP's hidden activation
(their inputs scaled). target_modules and feedforward_modules follow PEFT's matching (explorer.methods.targets).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from . import targets as peft_targets
from .base import Adaptation, Method, Term


@dataclass
class IA3Options:
    target_modules: str = option("", "PEFT's target_modules: layers to rescale (comma list, re:<regex>, "
                                 "all-linear); empty = PEFT's defaults for this model.")
    feedforward_modules: str = option("", "PEFT's feedforward_modules: those of the targets whose input (not "
                                      "output) is rescaled (comma list or re:<regex>); empty = the defaults.")


def defaults(arch) -> tuple[list[str], list[str]]:
    from peft.utils import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
    )
    from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

    if arch.model_type in TARGETS:
        return list(TARGETS[arch.model_type]), list(FEEDFORWARD.get(arch.model_type, []))
    linears = [lin for block in arch.blocks for lin in block.linears]
    attention = [lin.short for lin in linears if lin.reads == "attn_in" and lin.short in ("k_proj", "v_proj")]
    attention = attention or [lin.short for lin in linears if lin.reads == "attn_in"][:1]
    feedforward = list(dict.fromkeys(lin.short for lin in linears if lin.reads == "mlp_mid"))
    return list(dict.fromkeys(attention + feedforward)), feedforward


def peft_specs(spec, options):
    """(target_modules, feedforward_modules) as PEFT gets them."""
    arch = spec.arch
    default_targets, default_ff = defaults(arch)
    target_spec = peft_targets.peft_form(options.target_modules) or default_targets
    ff_spec = peft_targets.peft_form(options.feedforward_modules) or default_ff
    if not options.target_modules:  # PEFT's table may name layers a model lacks (Mixtral's fused experts: no 'w2')
        present = arch.leaf_names
        target_spec = [t for t in target_spec if t.rpartition(".")[2] in present] or target_spec
    if not options.feedforward_modules and isinstance(target_spec, list):
        ff_spec = [f for f in ff_spec if f in target_spec]
    if isinstance(target_spec, list) and isinstance(ff_spec, list) and not set(ff_spec) <= set(target_spec):
        raise ExplorerError("feedforward_modules must be a subset of target_modules.")
    return target_spec, ff_spec


def resolve(spec, options) -> tuple[list[str], list[str]]:
    """(targets, feedforward) as full module names, matched as PEFT matches them."""
    from types import SimpleNamespace

    from peft.tuners.ia3.model import IA3Model

    target_spec, ff_spec = peft_specs(spec, options)
    found = peft_targets.match(spec.arch, "ia3", target_spec)
    config = SimpleNamespace(feedforward_modules=ff_spec or [])
    feedforward = [n for n in found.targets if IA3Model._check_target_module_feedforward(config, n)]
    return list(found.targets), feedforward


def terms(spec, options):
    arch = spec.arch
    targets, feedforward = resolve(spec, options)
    ff = set(feedforward)
    out = []
    for local, layers, example in peft_targets.group(arch, targets):
        m = arch.by_name[example]
        size, side = (m.in_features, "input") if example in ff else (m.out_features, "output")
        n = max(len(layers), 1)
        out.append(Term(local, size * n, f"{size} ({side} scale) × {n} {peft_targets.layer_span(layers)} = {size * n:,}"))
    return out


def adaptation(spec, options) -> Adaptation:
    targets, feedforward = resolve(spec, options)
    return Adaptation(ia3_out=frozenset(t for t in targets if t not in feedforward), ia3_in=frozenset(feedforward))


def apply(model, spec, options):
    from peft import IA3Config, get_peft_model

    targets, feedforward = peft_specs(spec, options)
    conv1d = any(spec.arch.by_name[n].kind == "conv1d" for n in resolve(spec, options)[0])
    return get_peft_model(model, IA3Config(task_type="CAUSAL_LM", target_modules=targets,
                                           feedforward_modules=feedforward, fan_in_fan_out=conv1d))


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
