"""DeLoRA (Bini, Girrbach & Akata 2025, "Decoupling Angles and Strength in Low-rank Adaptation"), built by PEFT
(``peft.tuners.delora``).

LoRA's B·A with each rank-one term normalised and the whole update bounded: ΔW·x = (λ/r)·B·Ξ·A·(x ⊙ ‖W‖_col),
Ξ = diag(1/(‖a_i‖·‖b_i‖)), so ‖ΔW‖ never exceeds λ (the trained delora_lambda, started at the option's value).
Trained per layer: A (r×in), B (out×r) and λ, so r·(in + out) + 1. PEFT also keeps W's column norms
(in entries per layer) as a saved, frozen buffer.

FLOPs, as ``peft.tuners.delora.layer.DeloraLinear.forward`` runs them: LoRA's two products per token, the
normalisation being elementwise. Merged: no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..costs.memory import distinct_inputs
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("delora", "DeLoRA")


@dataclass
class DeloraOptions:
    r: int = option(8, "DeLoRA rank (PEFT's DeloraConfig.r).", min=1, max=4096)
    delora_lambda: int = option(15, "Initial bound λ on the update's Frobenius norm (trained).", min=1, max=10**6)
    module_dropout: float = option(0.0, "Dropout on the DeLoRA path's input during training.", min=0.0, max=0.9)
    target_preset: str = preset_option("DeLoRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def per_module(m, options):
    r = options.r
    return r * (m.in_features + m.out_features) + 1, f"{r}·({m.in_features}+{m.out_features}) + 1 (λ)"


def frozen(m, options):
    return m.in_features, f"{m.in_features} (W's column norms, saved)"


def products(m, options):
    down, up = 2 * m.in_features * options.r, 2 * options.r * m.out_features
    return Product(down, down, down), Product(up, 2 * up, 0)  # A: its gradient, x's if needed; B: both


def make_config(spec, options):
    from peft import DeloraConfig

    return peft_config(DeloraConfig, r=options.r, delora_lambda=options.delora_lambda,
                       module_dropout=options.module_dropout, **TUNER.peft_kwargs(spec, options))


def saved(spec, options) -> tuple[int, int]:
    """What autograd keeps (``peft.tuners.delora.layer.DeloraLinear.forward``), as (elements per token beyond the
    generic count, elements per forward), at the activations' width, over the adapted layers:
    - per token: A's input ``x_d * delora_w_norm``, a new tensor in every layer (in; the generic count has each
      distinct layer input once, taken off here), A's output h that ``h * scaling`` keeps for the scale's gradient
      (r) and B's input ``h * scaling`` (r); with module_dropout, the dropout's mask where the layer's input needs a
      gradient (in, at the input's width as torch's CPU dropout keeps it);
    - per forward: ‖A‖ by rows and ‖B‖ by columns and their clamped values (4r), their product and the scale
      (λ/r)/(An·Bn) (2r), and λ/r (1)."""
    arch, r = spec.arch, options.r
    names = [n for n in TUNER.targets(spec, options) if arch.layer_of(n) is not None]
    per_token = sum(arch.by_name[n].in_features + 2 * r for n in names) - distinct_inputs(arch, names)
    if options.module_dropout > 0:
        per_token += sum(arch.by_name[n].in_features for n in inputs_with_grad(arch, names))
    return per_token, len(names) * (6 * r + 1)


LINEAR = linear_method(
    TUNER, per_module, products, make_config, frozen=frozen,
    name="delora", title="DeLoRA", where="linear weights (a normalised low-rank update with a bounded norm)",
    explanation="LoRA's low-rank update with each rank-one direction normalised and the update's size set by "
                "one trained number λ: the direction (angles) and the strength of the change are learned apart, "
                "and the change can never exceed λ.",
    when_to_use="Where LoRA works but is sensitive to the learning rate or drifts too far from the base model "
                "in long runs (the paper's claim).",
    default_lr=1e-3, options_type=DeloraOptions, mergeable=True,
    merge_reason="The bounded B·Ξ·A (times W's column norms) has the shape of W, so it folds into W: zero "
                 "inference overhead.",
    peft_type="DELORA", artifact="DeLoRA adapter", in_default_race=False,
    literature=("Bini et al. 2025 (DeLoRA, abstract) claim DeLoRA matches or surpasses other PEFT methods on "
                "image generation, natural language understanding and instruction tuning while being more robust "
                "to learning rates and training length.",))


def adaptation(spec, options):
    per_token, per_step = saved(spec, options)
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_token=per_token, saved_per_step=per_step)


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
