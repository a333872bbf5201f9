"""LN tuning (Zhao et al. 2024, "Tuning LayerNorm in Attention: Towards Efficient Multi-Modal LLM Finetuning"),
PEFT's LNTuningConfig.

Only normalisation layers train. PEFT wraps each targeted norm and trains a copy of it (``LNTuningLayer``
deep-copies the layer), so the trainable count is the targeted norms' own parameters: RMSNorm has a weight of
d_model, GPT-2's LayerNorm a weight and a bias. Targets default to PEFT's table
(TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING: e.g. Llama's input_layernorm, post_attention_layernorm
and the final norm; Qwen2's post_attention_layernorm only); Mixtral and Phi-3, which it lacks, use Llama's names.
Norm weights are element-wise, so LN tuning adds no matmul FLOPs; but a trained norm before the first attention
makes every layer above it pay the input-gradient matmuls in backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, Term, per_layer_term

LLAMA_NORMS = ["input_layernorm", "post_attention_layernorm", "norm"]
FALLBACK = {"mixtral": LLAMA_NORMS, "phi3": LLAMA_NORMS}
# What each norm feeds, per architecture (transformers 5.23's modelling files): the FLOP formulas need it.
FEEDS = {
    "gpt2": {"ln_1": "attn_in", "ln_2": "mlp_in", "ln_f": "final"},
    "gemma2": {"input_layernorm": "attn_in", "post_attention_layernorm": "attn_out",
               "pre_feedforward_layernorm": "mlp_in", "post_feedforward_layernorm": "mlp_out", "norm": "final"},
}
LLAMA_FEEDS = {"input_layernorm": "attn_in", "post_attention_layernorm": "mlp_in", "norm": "final"}


@dataclass
class LnTuningOptions:
    target_modules: str = option("", "Comma-separated norm layers to train; empty = PEFT's defaults for this model.")


def feeds(spec) -> dict:
    return FEEDS.get(spec.arch.model_type, LLAMA_FEEDS)


def resolve(spec, options) -> list[str]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING as DEFAULTS

    known = feeds(spec)
    chosen = [n.strip() for n in options.target_modules.split(",") if n.strip()]
    if not chosen:
        chosen = FALLBACK.get(spec.arch.model_type) or DEFAULTS.get(spec.arch.model_type, [])
    missing = [n for n in chosen if n not in known]
    if missing:
        raise ExplorerError(f"This model has no norm layer named {', '.join(missing)}; "
                            f"its norm layers are: {', '.join(known)}.")
    if not chosen:
        raise ExplorerError("LN tuning has no norm layer to train in this model; list target_modules.")
    return list(dict.fromkeys(chosen))


def norm_size(spec, name: str) -> int:
    """Parameters of one such norm: its weight (and GPT-2's bias). The final norm's are arch.final_norm_params;
    a block's norms share norm_params_per_layer equally (2 for Llama-likes and GPT-2, 4 for Gemma-2)."""
    arch = spec.arch
    if feeds(spec)[name] == "final":
        return arch.final_norm_params
    return arch.norm_params_per_layer // len([n for n, f in feeds(spec).items() if f != "final"])


def terms(spec, options) -> list[Term]:
    out = []
    for name in resolve(spec, options):
        size = norm_size(spec, name)
        bias = " (weight and bias)" if spec.arch.model_type == "gpt2" else ""
        if feeds(spec)[name] == "final":
            out.append(Term(f"{name} (final)", size, f"{size}{bias} = {size:,}"))
        else:
            out.append(per_layer_term(name, size, spec.arch.layers, f"{size}{bias}"))
    return out


def adaptation(spec, options) -> Adaptation:
    return Adaptation(norms=frozenset(feeds(spec)[name] for name in resolve(spec, options)))


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
