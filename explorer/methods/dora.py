"""DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"), PEFT's use_dora.

LoRA's r·(in+out) per layer plus a trainable magnitude vector of `out` entries: W' = m·(W+BA)/‖W+BA‖.

Activations: LoRA's plus what explorer.methods.lora.dora_saved counts (the base and LoRA outputs per token, ‖W+BA‖
and its scale per forward). Each layer's forward also builds B·A through ``lora_B(lora_A(eye(in)))``, whose graph
keeps the in × in identity until the layer returns (its product is detached), then frees it: tests/test_memory_saved.py
counts saved storages by address, so those freed identities, and later tensors that reuse their addresses, make its
figure vary from run to run (24 tokens: 40–42 MiB measured, 21.3 MiB still held at the forward's end, as predicted).
"""

from dataclasses import dataclass

from .base import Method
from .lora import LoraOptions, apply_lora, lora_adaptation, lora_terms, resolve_match


@dataclass
class DoraOptions(LoraOptions):
    pass


METHOD = Method(
    name="dora", title="DoRA", where="linear weights (direction by low-rank update, plus a learned magnitude)",
    explanation="Splits each adapted weight into a magnitude and a direction; LoRA updates the direction and "
                "a small vector learns the magnitude of each output row.",
    when_to_use="When LoRA at low rank underfits: DoRA often closes part of the gap to full fine-tuning "
                "for a few more parameters and slower training steps.",
    default_lr=1e-3, options_type=DoraOptions, mergeable=True,
    merge_reason="m·(W+BA)/‖W+BA‖ is again a plain weight matrix once training ends, so it folds into W.",
    uses_peft=True,
    terms=lambda spec, options: lora_terms(spec, options, dora=True),
    adaptation=lambda spec, options: lora_adaptation(spec, options, dora=True),
    apply=lambda model, spec, options: apply_lora(model, spec, options, dora=True),
    validate=lambda spec, options: resolve_match(spec.arch, options, dora=True), family="lora", peft_type="LORA",
    switches={"use_dora": {True: "dora", False: "lora"}})
