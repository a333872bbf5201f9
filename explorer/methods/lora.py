"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

W' = W + (alpha / r)·B·A with A ∈ ℝ^{r×in}, B ∈ ℝ^{out×r}: r·(in + out) trainable parameters per
adapted linear layer, built by PEFT. rsLoRA (Kalajievska 2023) scales by alpha/√r instead.
DoRA and QLoRA reuse this file's target handling.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.specs import Arch
from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, Term, per_layer_term

PRESETS = ("q,v", "attention", "all-linear", "custom")


def preset_targets(arch: Arch, preset: str) -> list[str]:
    """Per-architecture presets. Mixtral's experts are fused 3-D tensors, not linear layers, so
    'all-linear' reaches its attention only (PEFT's target_parameters could reach the experts)."""
    attention = [lin.name for lin in arch.linears if lin.reads in ("attn_in", "attn_core")]
    if preset == "q,v":
        fused = [lin.name for lin in arch.linears if lin.reads == "attn_in"]
        return ["q_proj", "v_proj"] if "q_proj" in fused else fused[:1]
    if preset == "attention":
        return attention
    if preset == "all-linear":
        return [lin.name for lin in arch.linears]
    raise ExplorerError(f"Unknown target preset '{preset}'; choose one of {', '.join(PRESETS)}.")


def resolve_targets(arch: Arch, options) -> list[str]:
    if options.target_preset != "custom":
        return preset_targets(arch, options.target_preset)
    names = [n.strip() for n in options.target_modules.split(",") if n.strip()]
    if not names:
        raise ExplorerError("target_modules is empty: list linear layers, e.g. q_proj,v_proj.")
    available = [lin.name for lin in arch.linears] + ["lm_head"]
    missing = [n for n in names if n not in available]
    if missing:
        raise ExplorerError(f"This model has no linear layer named {', '.join(missing)}; "
                            f"its linear layers are: {', '.join(available)}.")
    return list(dict.fromkeys(names))


@dataclass
class LoraOptions:
    r: int = option(8, "Rank r of the update B·A: trainable parameters grow linearly with it.", min=1, max=4096)
    lora_alpha: int = option(16, "Scaling numerator: the update is multiplied by alpha/r (alpha/√r with rsLoRA).",
                             min=1, max=65536)
    lora_dropout: float = option(0.05, "Dropout on the LoRA path's input during training.", min=0.0, max=0.9)
    target_preset: str = option("all-linear", "Which linear layers get an update: q and v (the LoRA paper), "
                                "all attention projections, every linear layer of the block, or a custom list.",
                                choices=PRESETS)
    target_modules: str = option("", "Custom comma-separated linear layer names (used when the preset is custom).")
    use_rslora: bool = option(False, "rsLoRA: scale by alpha/√r, which keeps high ranks stable.")


def lora_terms(spec, options, dora: bool = False) -> list[Term]:
    arch = spec.arch
    terms = []
    for name in resolve_targets(arch, options):
        lin = arch.lm_head if name == "lm_head" else arch.linear(name)
        r = options.r
        per = r * (lin.in_features + lin.out_features) + (lin.out_features if dora else 0)
        expr = f"{r}·({lin.in_features}+{lin.out_features})" + (f" + {lin.out_features} (magnitude)" if dora else "")
        layers = 1 if name == "lm_head" else arch.layers
        terms.append(per_layer_term(name, per, layers, expr) if layers > 1
                     else Term(name, per, f"{expr} = {per:,}"))
    return terms


def lora_adaptation(spec, options, dora: bool = False) -> Adaptation:
    return Adaptation(lora={n: options.r for n in resolve_targets(spec.arch, options)}, dora=dora,
                      lora_dropout=options.lora_dropout)


def peft_lora_config(spec, options, dora: bool = False):
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", r=options.r, lora_alpha=options.lora_alpha,
                      lora_dropout=options.lora_dropout, target_modules=resolve_targets(spec.arch, options),
                      use_rslora=options.use_rslora, use_dora=dora,
                      fan_in_fan_out=spec.arch.model_type == "gpt2")  # GPT-2's Conv1D stores W transposed


def apply_lora(model, spec, options, dora: bool = False):
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(spec, options, dora))


METHOD = Method(
    name="lora", title="LoRA", where="linear weights (a low-rank update added beside them)",
    explanation="Freezes the model and learns, for chosen linear layers, a low-rank update B·A added to "
                "the frozen weight W. Only A and B train.",
    when_to_use="The default for almost any custom fine-tune: cheap to train, and merges into the weights "
                "so serving costs nothing extra.",
    default_lr=1e-3, options_type=LoraOptions, mergeable=True,
    merge_reason="B·A has the shape of W, so W + (alpha/r)·B·A is an ordinary weight: zero inference overhead.",
    uses_peft=True, terms=lora_terms, adaptation=lora_adaptation, apply=apply_lora,
    validate=lambda spec, options: resolve_targets(spec.arch, options), textbook="lora", family="lora",
    peft_type="LORA", combinations=("linear", "cat", "ties", "svd", "dare_linear", "dare_ties", "magnitude_prune"),
    artifact="LoRA adapter", switches={"use_dora": {True: "dora", False: "lora"}}, mixed_batch=True, strength=True)
