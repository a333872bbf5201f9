"""GraLoRA (Jung et al. 2025, "GraLoRA: Granular Low-Rank Adaptation for Parameter-Efficient Fine-Tuning"),
built by PEFT (``peft.tuners.gralora``).

The weight is cut into gralora_k × gralora_k sub-blocks, and each sub-block gets its own low-rank update of rank
r/k: the same r·(in + out) parameters as LoRA at rank r, for an update of rank up to k·r. With hybrid_r > 0 a
plain LoRA of rank hybrid_r is added beside it: (r + hybrid_r)·(in + out) per layer. ΔW is scaled by
alpha/(r + hybrid_r).

FLOPs, as ``peft.tuners.gralora.layer.Linear.forward`` runs them: two batched products per token, the size of
LoRA's at rank r (2·in·r and 2·r·out), plus the hybrid LoRA's. Merged: no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("gralora", "GraLoRA", conv1d=True)


@dataclass
class GraloraOptions:
    r: int = option(32, "GraLoRA rank (PEFT's GraloraConfig.r): LoRA's count at this rank; divisible by "
                    "gralora_k.", min=1, max=4096)
    gralora_k: int = option(2, "Sub-blocks per side (k): each of the k² blocks gets rank r/k. PEFT recommends 2 up "
                            "to rank 32, 4 from 64.", min=1, max=64)
    hybrid_r: int = option(0, "Rank of a plain LoRA added beside (hybrid GraLoRA).", min=0, max=4096)
    alpha: int = option(64, "Scaling numerator: the update is multiplied by alpha/(r + hybrid_r).", min=1,
                        max=65536)
    gralora_dropout: float = option(0.0, "Dropout on the GraLoRA path's input during training.", min=0.0, max=0.9)
    target_preset: str = preset_option("GraLoRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def check(m, options):
    k = options.gralora_k  # r's divisibility by k is PEFT's config's own check
    for side, width in (("in_features", m.in_features), ("out_features", m.out_features)):
        if width % k:
            raise ExplorerError(f"PEFT: {side} should be divisible by gralora_k, but {m.name} has {width} and "
                                f"gralora_k is {k}.")


def per_module(m, options):
    rank = options.r + options.hybrid_r
    rank_text = f"({options.r}+{options.hybrid_r})" if options.hybrid_r else f"{options.r}"
    return rank * (m.in_features + m.out_features), f"{rank_text}·({m.in_features}+{m.out_features})"


def products(m, options):
    rank = options.r + options.hybrid_r  # the sub-block products sum to LoRA's at rank r; the hybrid is LoRA's
    down, up = 2 * m.in_features * rank, 2 * rank * m.out_features
    return Product(down, down, down), Product(up, 2 * up, 0)


def saved_per_token(spec, options) -> int:
    """Elements per token autograd keeps beyond explorer.costs.memory's generic count (every adapted layer's input),
    as ``peft.tuners.gralora.layer.Linear.forward`` runs, per adapted layer: the sub-blocks' rank-r/k outputs,
    regrouped (``.permute(...).reshape(...)``, a copy) into k groups of r, which the second einsum keeps for B's
    gradient: k·r; with hybrid_r, the plain LoRA's A output (hybrid_r), kept for its B's gradient. The first einsum
    keeps the input's k slices, a view of the input itself (the generic count). With gralora_dropout, each dropout
    call (one, or two with hybrid_r) keeps its own dropped-out copy of the input (for A's gradient) and, where the
    input needs a gradient (explorer.methods.saved_tensors), its mask at the input's width, as torch's unfused
    dropout keeps it on CPU (CUDA's fused one keeps a byte per element: there this over-counts); the input itself is
    then kept by nothing (the frozen layer needs none), so the generic count is taken back."""
    from ..costs.memory import distinct_inputs

    arch = spec.arch
    names = TUNER.targets(spec, options)
    token = (options.gralora_k * options.r + options.hybrid_r) * len(names)
    if options.gralora_dropout > 0:
        calls = 2 if options.hybrid_r else 1
        token += calls * sum(arch.by_name[n].in_features for n in [*names, *inputs_with_grad(arch, names)])
        token -= distinct_inputs(arch, names)
    return token


def make_config(spec, options):
    from peft import GraloraConfig

    return peft_config(GraloraConfig, r=options.r, gralora_k=options.gralora_k, hybrid_r=options.hybrid_r,
                       alpha=options.alpha, gralora_dropout=options.gralora_dropout,
                       fan_in_fan_out=TUNER.conv1d_targets(spec, options), **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config, check,
    name="gralora", title="GraLoRA", where="linear weights (a low-rank update per sub-block of the weight)",
    explanation="LoRA's parameters spent differently: the weight is cut into k×k sub-blocks and each gets its "
                "own small low-rank update, so the whole update can reach rank k·r for LoRA's count at rank r.",
    when_to_use="Where LoRA at a high rank stops improving (the paper's claim: LoRA's gradients entangle across "
                "inputs at high rank, sub-blocks do not).",
    default_lr=1e-3, options_type=GraloraOptions, mergeable=True,
    merge_reason="The block updates together have the shape of W, so they fold into W: zero inference overhead.",
    peft_type="GRALORA", artifact="GraLoRA adapter", in_default_race=False,
    literature=("Jung et al. 2025 (GraLoRA, abstract) claim up to +8.5% absolute Pass@1 over LoRA on HumanEval+ "
                "at the same parameter count and compute, with gains across model sizes and ranks; PEFT's method "
                "comparison (issue 27) reports 49.5% on GSM8K against LoRA r32's 47.8%.",))


def adaptation(spec, options):
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_token=saved_per_token(spec, options))


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
