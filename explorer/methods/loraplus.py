"""LoRA+ (Hayou, Ghosh & Yu 2024, "LoRA+: Efficient Low Rank Adaptation of Large Models"), PEFT's
``peft.optimizers.create_loraplus_optimizer``.

The same adapter as LoRA (same count, FLOPs, saved files, merge); only the optimizer differs: B gets the
learning rate lr·loraplus_lr_ratio, A keeps lr (PEFT puts every lora_B weight, and any 1-D trainable tensor,
in the faster group). The paper's scaling argument says A and B should not share a learning rate when the
model is wide; its default ratio is 2^4 = 16.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from .base import Method
from .lora import LoraOptions, apply_lora, lora_adaptation, lora_terms, resolve_targets


@dataclass
class LoraPlusOptions(LoraOptions):
    loraplus_lr_ratio: float = option(16.0, "Learning rate of B ÷ learning rate of A (PEFT's name; the paper "
                                      "recommends 2^4 = 16).", min=1.0, max=1024.0)


def make_optimizer(model, options, lr: float, optimizer_cls, optimizer_kwargs: dict):
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, optimizer_cls, lr=lr, loraplus_lr_ratio=options.loraplus_lr_ratio,
                                     **optimizer_kwargs)


METHOD = Method(
    name="loraplus", title="LoRA+", where="linear weights (LoRA, with B learning faster than A)",
    explanation="LoRA's adapter trained with two learning rates: B, which starts at zero, gets the base rate "
                "times loraplus_lr_ratio; A keeps the base rate. Parameters, FLOPs, memory and merging are "
                "LoRA's: only the optimizer changes.",
    when_to_use="Any LoRA fine-tune where training is slow to get going: it costs nothing extra.",
    default_lr=1e-3, options_type=LoraPlusOptions, mergeable=True,
    merge_reason="The trained B·A is LoRA's: W + (alpha/r)·B·A is an ordinary weight, zero inference overhead.",
    uses_peft=True, terms=lora_terms, adaptation=lora_adaptation,
    apply=lambda model, spec, options: apply_lora(model, spec, options),
    validate=lambda spec, options: resolve_targets(spec.arch, options), family="lora", peft_type="LORA",
    artifact="LoRA adapter", in_default_race=False,
    make_optimizer=make_optimizer,
    mixed_batch=True, strength=True,  # its adapter is LoRA's (the composition demo stays LoRA, prompt and prefix)
    recipe_refusal="its optimizer gives B a larger learning rate than A (PEFT's create_loraplus_optimizer), which "
                   "the recipe's train.py, with the Trainer's own optimizer, does not",
    literature=("Hayou et al. 2024 (LoRA+, abstract) claim 1-2% better results and up to about 2x faster "
                "fine-tuning than LoRA at the same computational cost, from a well-chosen ratio of B's to A's "
                "learning rate.",))
