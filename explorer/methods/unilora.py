"""Uni-LoRA (Li et al. 2025, "Uni-LoRA: One Vector is All You Need"), built by PEFT (``peft.tuners.unilora``).

LoRA's factors A (r × in) and B (out × r) of every adapted layer are not stored: each of their entries is one entry
of a single trained vector θ_d of theta_d_length numbers, shared by the whole model, picked by a fixed random index
and multiplied by a fixed scale (1/√ of how many LoRA entries share that θ_d entry). PEFT spreads the indices
evenly: each θ_d entry serves ⌊D/d⌋ or ⌈D/d⌉ of the D = Σ r·(in + out) LoRA entries
(``UniLoraModel.generate_index``, from proj_seed). Trained: θ_d alone, theta_d_length parameters for the whole
model, whatever its size (``UniLoraModel._init_unilora_theta_d``). θ_d starts small and random, not zero (both
factors come from it: a zero start would give zero gradients), so the adapted model differs slightly from the base
before the first step.

The indices (int64) and scales of every layer are buffers, rebuilt from proj_seed when an adapter loads, so not
saved (PEFT's save_indices=False, its default, kept here): they are not shown as saved entries, but they are held
in memory while training (about three float32's worth per LoRA entry: counted with the frozen weights).

FLOPs, as ``peft.tuners.unilora.layer.Linear.forward`` runs them: A and B are gathered from θ_d and scaled
(element-wise work, not counted by torch's counter nor here), then applied as LoRA's two products,
F.linear(F.linear(x, A), B): 2·in·r + 2·r·out per token, both factors trained. Merged, B·A folds into W: no
overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .base import Adaptation, Method, Term
from .saved_tensors import dropout_per_token, inputs_with_grad
from .tuners import Tuner, exclude_option, modules_option, peft_config, preset_option

TUNER = Tuner("unilora", "Uni-LoRA", conv1d=True)


@dataclass
class UniLoraOptions:
    r: int = option(4, "Rank of the reconstructed LoRA factors (PEFT's UniLoraConfig.r); it sets how many LoRA "
                    "entries share θ_d, not the trained count.", min=1, max=4096)
    theta_d_length: int = option(256, "Length of the one trained vector θ_d (PEFT's theta_d_length): the whole "
                                 "adapter's trained count.", min=1, max=10**8)
    proj_seed: int = option(42, "Seed of the fixed assignment of LoRA entries to θ_d's entries.", min=0,
                            max=2**31 - 1)
    unilora_dropout: float = option(0.0, "Dropout on the Uni-LoRA path's input during training.", min=0.0, max=0.9)
    init_theta_d_bound: float = option(0.02, "θ_d starts uniform in ±this bound (not zero: its gradient would be "
                                       "zero).", min=1e-9, max=1.0)
    init_weights: bool = option(True, "PEFT's init_weights: true starts θ_d uniform in ±init_theta_d_bound; false "
                                "starts it standard normal.")
    target_preset: str = preset_option("Uni-LoRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def lora_entries(spec, options) -> int:
    """D: the LoRA entries θ_d reconstructs, r·(in + out) summed over the adapted layers."""
    return sum(options.r * (spec.arch.by_name[n].in_features + spec.arch.by_name[n].out_features)
               for n in TUNER.targets(spec, options))


def terms(spec, options) -> list[Term]:
    layers, d = len(TUNER.targets(spec, options)), options.theta_d_length
    return [Term(f"θ_d (one vector for all {layers} adapted layers)", d,
                 f"{d} (reconstructs r·(in+out) = {lora_entries(spec, options):,} LoRA entries) = {d:,}")]


def products(m, r: int) -> tuple:
    down, up = 2 * m.in_features * r, 2 * r * m.out_features  # LoRA's two products at rank r, both factors trained
    return Product(down, down, down), Product(up, 2 * up, 0)


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond every adapted layer's input, as ``peft.tuners.unilora.
    layer.Linear.forward`` runs (unilora_dropout > 0: saved_tensors.dropout_per_token, A reading the dropped copy).
    ``_get_lora_matrices`` gathers A = θ_d[indices_A]·scales_A (r × in) and B (out × r) anew each forward (the
    gather keeps only PEFT's index buffer, the product by the frozen scales only the scales); F.linear(x, A) keeps A
    where x needs a gradient (explorer.methods.saved_tensors), F.linear(h, B) keeps B and h, r per token, for B's
    gradient."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    step = sum(options.r * arch.by_name[n].out_features for n in names)
    step += sum(options.r * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))
    dropout = dropout_per_token(arch, names, names) if options.unilora_dropout > 0 else 0
    return step, options.r * len(names) + dropout


def adaptation(spec, options) -> Adaptation:
    step, token = saved(spec, options)
    # The index (int64) and scale (float32) buffers, one of each per LoRA entry: three float32's worth, counted as
    # frozen float32 buffers (as VeRA's shared matrices and OSF's SVD factors are)
    return Adaptation(products={n: products(spec.arch.by_name[n], options.r) for n in TUNER.targets(spec, options)},
                      vera_shared=3 * lora_entries(spec, options), saved_per_step=step, saved_per_token=token)


def make_config(spec, options):
    from peft import UniLoraConfig

    return peft_config(UniLoraConfig, r=options.r, theta_d_length=options.theta_d_length,
                       proj_seed=options.proj_seed, unilora_dropout=options.unilora_dropout,
                       init_theta_d_bound=options.init_theta_d_bound, init_weights=options.init_weights,
                       fan_in_fan_out=TUNER.conv1d_targets(spec, options), **TUNER.peft_kwargs(spec, options))


def _without_index_values():
    """PEFT's Uni-LoRA tuner for a meta-device build (the calculator's exact count): every layer, θ_d and every
    buffer as PEFT builds them, but the indices' values are not drawn. PEFT draws them on the CPU (numpy, one per
    LoRA entry: a minute and 3 GB for Llama-3.1-405B) and counts their uses with torch.bincount, which has no meta
    kernel; neither changes a count or a FLOP, and a run (on real tensors) builds through get_peft_model as is."""
    import torch
    from peft.tuners.unilora import UniLoraModel

    class WithoutIndexValues(UniLoraModel):
        def _assign_unilora_indices_and_scales(self, adapter_name: str) -> None:
            for layer in self._iter_unilora_layers():
                if adapter_name in layer.unilora_indices_A.keys():
                    layer.update_scaling(adapter_name, torch.empty(layer.unilora_indices_A[adapter_name].shape),
                                         torch.empty(layer.unilora_indices_B[adapter_name].shape))

    return WithoutIndexValues


def apply(model, spec, options):
    from peft import get_peft_model

    config = make_config(spec, options)
    if any(p.device.type == "meta" for p in model.parameters()):
        return _without_index_values()(model, config, "default")  # PEFT's tuner; its forward runs the model's
    return get_peft_model(model, config)


METHOD = Method(
    name="unilora", title="Uni-LoRA", where="linear weights (LoRA factors drawn from one vector for the whole model)",
    explanation="LoRA whose factors are not stored: every entry of every layer's A and B is a fixed, scaled copy "
                "of one entry of a single small vector shared by the whole model. Only that vector trains, so the "
                "adapter's size is set directly (theta_d_length), whatever the model.",
    when_to_use="When the adapter must be as small as possible (hundreds to thousands of numbers for a whole "
                "model) and a LoRA-like update is enough; a larger theta_d_length gives it more freedom.",
    default_lr=1e-2, options_type=UniLoraOptions, mergeable=True,
    merge_reason="The reconstructed B·A has the shape of W, so it folds into W: zero inference overhead.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply, validate=make_config,
    conv1d_layer=TUNER.conv1d, peft_type="UNILORA", artifact="Uni-LoRA adapter", in_default_race=False,
    literature=("Li et al. 2025 (Uni-LoRA, abstract) claim state-of-the-art parameter efficiency while matching or "
                "outperforming prior approaches on GLUE, mathematical reasoning and instruction tuning, with a "
                "single trainable vector reconstructing the LoRA parameters of the entire LLM.",))
