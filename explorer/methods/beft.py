"""BEFT, bias-efficient fine-tuning (Huang et al. 2025, "BEFT: Bias-Efficient Fine-Tuning of Language Models"),
built by PEFT (``peft.tuners.beft``).

Each adapted linear layer gets one trained bias vector of out entries, added to the frozen layer's output
(``BeftLayer.update_layer``: a (1, out) parameter, zero at the start). PEFT's default adapts the value projections
only (``TRANSFORMERS_MODELS_TO_BEFT_TARGET_MODULES_MAPPING``: v_proj); the preset "v" here is
that (where a model has no v_proj, the projection that makes its values: Phi-3's fused qkv_proj, so q, k and v
each get a bias; DeepSeek-V2's kv_b_proj).

FLOPs: an addition, no matmul (``peft.tuners.beft.layer.Linear.forward``); the layer's output now depends on a
trained vector, so everything above it pays input gradients, as IA³'s.

Merging: PEFT adds the vector into the layer's own bias and refuses where the layer has none
(``Linear.merge``: "Base layer has no bias, cannot merge bias adapter"). Llama-style layers (the demo model's,
SmolLM2's, Llama's, Mistral's, Gemma's) have none, so BEFT is offered as an adapter that stays separate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..costs.memory import distinct_inputs
from ..options import option
from .lora import PRESETS
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config

PRESETS_BEFT = ("v",) + PRESETS


def value_projection(arch) -> str:
    """v_proj, or where a model has none, its last attention-input projection, which makes the values: Phi-3's fused
    qkv_proj, DeepSeek-V2's kv_b_proj (keys and values from the compressed latent)."""
    inputs = [lin.short for block in arch.blocks for lin in block.linears if lin.reads == "attn_in"]
    return "v_proj" if "v_proj" in inputs else inputs[-1]


class BeftTuner(Tuner):
    """The LoRA presets, and "v": the value projection alone (PEFT's default for BEFT)."""

    def targets(self, spec, options) -> list[str]:
        if options.target_preset == "v":
            options = dataclasses.replace(options, target_preset="custom",
                                          target_modules=value_projection(spec.arch))
        return super().targets(spec, options)


TUNER = BeftTuner("beft", "BEFT")


@dataclass
class BeftOptions:
    init_weights: bool = option(True, "PEFT's BeftConfig.init_weights: the biases start at zero, so training starts "
                                "from the base model (false: random start; PEFT discourages it).")
    target_preset: str = option("v", "Which linear layers get a trained bias: v (the value projection, PEFT's "
                                "default), q and v, all attention projections, every linear "
                                "layer of the block, or a custom list (target_modules).", choices=PRESETS_BEFT)
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def per_module(m, options):
    return m.out_features, f"{m.out_features}"


def products(m, options):
    return (Product(0),)  # an addition only; the layer's output depends on a trained vector


def make_config(spec, options):
    from peft import BeftConfig

    return peft_config(BeftConfig, init_weights=options.init_weights, **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config,
    name="beft", title="BEFT", where="linear layers' outputs (a trained bias vector; value projections by default)",
    explanation="Freezes the model and learns one bias vector per chosen linear layer, added to its output: by "
                "default only the value projections of attention. The smallest of PEFT's adapters: a few thousand "
                "numbers for a small model.",
    when_to_use="A very small budget or very little data: it trains about one number per output feature of the "
                "layers it adapts, and adds no matmul.",
    default_lr=1e-2, options_type=BeftOptions, mergeable=False,
    merge_reason="PEFT merges BEFT's vector only into a layer that has its own bias, and Llama-style layers have "
                 "none: it stays a separate addition (one add per output feature, no matmul).",
    peft_type="BEFT", artifact="BEFT adapter", in_default_race=False,
    literature=("Huang et al. 2025 (BEFT, abstract) claim that their way of choosing which bias term to fine-tune "
                "(of the query, key or value projections) beats other bias-selection approaches across LLMs from "
                "110M to 6.7B parameters, encoder-only and decoder-only, on classification, multiple-choice and "
                "generation tasks.",))


def adaptation(spec, options):
    """What autograd keeps: nothing of its own. ``result + beft_bias`` (``peft.tuners.beft.layer.Linear.forward``)
    is an addition, whose backward needs neither operand, and the frozen layer keeps no input: the generic count's
    input of each adapted layer (explorer.costs.memory.distinct_inputs) is taken off."""
    linear = LINEAR.adaptation(spec, options)
    return dataclasses.replace(linear, saved_per_token=-distinct_inputs(spec.arch, linear.products))


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
