"""LN tuning (Zhao et al. 2024, "Tuning LayerNorm in Attention: Towards Efficient Multi-Modal LLM Finetuning"),
PEFT's LNTuningConfig.

Only normalisation layers train. PEFT wraps each targeted norm and trains a copy of it (``LNTuningLayer``
deep-copies the layer), so the trainable count is the targeted norms' own parameters, read from the model's
module table (explorer.costs.derive): RMSNorm has a weight of d_model, GPT-2's LayerNorm a weight and a bias.
Targets default to PEFT's table (TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING: e.g. Llama's
input_layernorm, post_attention_layernorm and the final norm; Qwen2's post_attention_layernorm only); for a
model it lacks, the norms read from the model: those directly in each block and the final norm.
Norm weights are element-wise, so LN tuning adds no matmul FLOPs; but a trained norm makes every product it
feeds, and everything above, pay the input-gradient matmuls in backward (explorer.costs.flops follows the
norm's weight through the block's dependency graph).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from . import targets as peft_targets
from .base import Adaptation, Method, Term


@dataclass
class LnTuningOptions:
    target_modules: str = option("", "PEFT's target_modules: the norm layers to train (comma list or re:<regex>); "
                                 "empty = PEFT's defaults for this model.")


def is_norm(module) -> bool:
    return "norm" in module.cls.lower()


def norm_names(arch) -> list[str]:
    """The model's norm layers as targets: those directly in a block (by their name there) and, outside the
    blocks, the final norm (by its full name)."""
    out = []
    for m in arch.modules:
        if not (m.name and is_norm(m) and m.own_params):
            continue
        layer, local = arch.locate(m.name)
        if layer is None or "." not in local:
            out.append(m.name if layer is None else local)
    return list(dict.fromkeys(out))


def defaults(arch) -> list[str]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING as TABLE

    present = arch.leaf_names
    listed = [n for n in TABLE.get(arch.model_type, []) if n.rpartition(".")[2] in present]
    return listed or norm_names(arch)


def resolve(spec, options) -> list[str]:
    """The full names of the norm layers LN tuning trains, matched as PEFT matches them."""
    arch = spec.arch
    target_spec = peft_targets.peft_form(options.target_modules) or defaults(arch)
    if isinstance(target_spec, list):
        missing = [e for e in target_spec if not any(n == e or n.endswith("." + e) for n in arch.module_names)]
        if missing:
            raise ExplorerError(f"This model has no norm layer named {', '.join(missing)}; its norm layers are: "
                                f"{', '.join(norm_names(arch)) or 'none'}.")
    if not target_spec:
        raise ExplorerError("LN tuning has no norm layer to train in this model; list target_modules.")
    names = list(peft_targets.match(arch, "ln_tuning", target_spec).targets)
    others = [n for n in names if not is_norm(arch.by_name[n])]
    if others:
        raise ExplorerError(f"LN tuning trains normalisation layers; {others[0]} is a {arch.by_name[others[0]].cls}. "
                            f"This model's norm layers are: {', '.join(norm_names(arch)) or 'none'}.")
    return names


def terms(spec, options) -> list[Term]:
    arch = spec.arch
    out = []
    for local, layers, example in peft_targets.group(arch, resolve(spec, options)):
        size = arch.by_name[example].own_params  # its weight (and bias, for a LayerNorm with one)
        if layers:
            n = len(layers)
            out.append(Term(local, size * n, f"{size} × {n} {peft_targets.layer_span(layers)} = {size * n:,}"))
        else:
            out.append(Term(f"{local} (final)", size, f"{size:,}"))
    return out


def adaptation(spec, options) -> Adaptation:
    return Adaptation(trainable_modules=frozenset(resolve(spec, options)))


def apply(model, spec, options):
    from peft import LNTuningConfig, get_peft_model

    return get_peft_model(model, LNTuningConfig(task_type="CAUSAL_LM", target_modules=resolve(spec, options)))


METHOD = Method(
    name="ln_tuning", title="LN tuning", where="normalisation layers only (their scales, and GPT-2's biases)",
    explanation="Trains nothing but the normalisation layers' weights: a few thousand numbers that rescale each "
                "feature before attention and the feed-forward block. Everything else stays frozen.",
    when_to_use="The smallest possible fine-tune of a model's behaviour, e.g. adapting to a new domain or input "
                "type; too few parameters to learn much new content.",
    default_lr=1e-2, options_type=LnTuningOptions, mergeable=True,
    merge_reason="Nothing is added beside the norms: merging swaps each original norm for its trained copy, so "
                 "the merged model is the base with new norm weights and costs exactly what the base costs.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply,
    validate=lambda spec, options: resolve(spec, options), peft_type="LN_TUNING", artifact="norm weights",
    in_default_race=False,
    saved_bytes_per_param=2,  # PEFT saves the trained norm copies at the model's precision: the Calculator assumes bf16
    literature=("Zhao et al. 2024 (Tuning LayerNorm in Attention, abstract) claim that, turning LLMs into "
                "multi-modal LLMs, tuning LayerNorm alone beats LoRA by over 20% on average across five "
                "multi-modal tasks at 13B, with 41.9% fewer trainable parameters and 17.6% less GPU memory.",))
