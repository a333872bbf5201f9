"""MiSS (Kang & Yin 2024, "MiSS: Revisiting the Trade-off in LoRA with an Efficient Shard-Sharing Structure";
formerly Bone), built by PEFT (``peft.tuners.miss``).

The default ("balance") form trains one r×out matrix D per adapted linear layer; the input is cut into in/r
shards of r features, the shards are summed, and the sum times D is added to the frozen output:
y = W·x + (Σ_shards x_s)·D. So r·out trainable parameters per layer (LoRA's B alone at rank r). "mini" shares
an r×mini_r block along the outputs (r·mini_r per layer); "bat" trains out/r blocks of r×r that multiply the
frozen weight's own r×r blocks (out·r per layer; the weight is rebuilt every forward).

FLOPs, as ``peft.tuners.miss.layer.MissLinear.forward`` runs them: one (tokens × r)·(r × out) product per token
for balance and mini (the shard sum is elementwise); for bat, W's blocks times D once per forward (2·in·out·r)
and F.linear with the rebuilt weight in place of the frozen product (its weight gradient in backward).
Merged: no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("miss", "MiSS")


@dataclass
class MissOptions:
    r: int = option(32, "Shard width along the inputs (PEFT's MissConfig.r; PEFT's default 64, 32 here so that "
                    "the demo model's 32-wide layers take it: at most every target's in_features).", min=1,
                    max=65536)
    init_weights: str = option("true", "PEFT's init_weights: true (balance: an r×out matrix), mini (an r×mini_r "
                               "block shared along the outputs) or bat (r×r blocks that multiply W's own).",
                               choices=("true", "mini", "bat"))
    mini_r: int = option(1, "Output width of the shared block (mini only); must divide every target's "
                         "out_features.", min=1, max=65536)
    miss_dropout: float = option(0.0, "Dropout on the MiSS path's input during training.", min=0.0, max=0.9)
    target_preset: str = preset_option("MiSS")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def check(m, options):
    r = options.r
    if r > m.in_features:
        raise ExplorerError(f"PEFT: `r` ({r}) must be less than or equal to in_features ({m.in_features}) "
                            f"of {m.name}.")
    if options.init_weights == "bat" and (m.in_features % r or m.out_features % r):
        raise ExplorerError(f"PEFT: with init_weights=bat the weight must be fully divisible into [r, r] blocks; "
                            f"{m.name} is {m.out_features}×{m.in_features} and r is {r}.")
    if options.init_weights == "mini" and m.out_features % options.mini_r:
        raise ExplorerError(f"PEFT: mini_r ({options.mini_r}) must divide out_features ({m.out_features}) of "
                            f"{m.name}.")


def per_module(m, options):
    r = options.r
    if options.init_weights == "mini":
        return r * options.mini_r, f"{r}·{options.mini_r}"
    return r * m.out_features, f"{r}·{m.out_features}"


def products(m, options):
    r, n, out = options.r, m.in_features, m.out_features
    dense = 2 * n * out
    if options.init_weights == "bat":  # W's r×r blocks (frozen) times D's, then F.linear with the new weight
        return Product(2 * n * out * r, 2 * n * out * r, 0, per_token=False), Product(0, dense, 0)
    shard = 2 * r * out  # (Σ shards of x)·D per token
    return (Product(shard, shard, shard),)


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond explorer.costs.memory's generic count (every adapted
    layer's input), as ``peft.tuners.miss.layer.MissLinear.forward`` runs, per adapted layer of out×in:
    - balance (true) and mini: the input's r-wide shards summed (torch.sum keeps nothing), times D: the matmul keeps
      the r-wide sum per token for D's gradient; the input itself is kept by nothing (the frozen layer needs none),
      so the generic count of the adapted layers' inputs is taken back. mini repeats its r×mini_r block to r×out
      (a new tensor), kept for the sum's gradient where the layer's input needs one (explorer.methods.saved_tensors);
      with miss_dropout, each such layer's dropout keeps its mask over the (zero-padded to a multiple of r) input,
      at the input's width as torch's unfused dropout keeps it on CPU (CUDA's fused one keeps a byte per element:
      there this over-counts);
    - bat: F.linear(x, W + ΔW) keeps the input (the generic count) and W + ΔW (out×in) where the input needs a
      gradient; ``get_delta_weight`` multiplies W's clone (out×in, a new tensor) by D in r×r blocks, which the
      matmul keeps for D's gradient."""
    from ..costs.memory import distinct_inputs

    arch = spec.arch
    names = TUNER.targets(spec, options)
    graded = inputs_with_grad(arch, names)
    r = options.r
    if options.init_weights == "bat":
        weights = sum(arch.by_name[n].out_features * arch.by_name[n].in_features for n in [*names, *graded])
        return weights, 0
    step = sum(r * arch.by_name[n].out_features for n in graded) if options.init_weights == "mini" else 0
    token = r * len(names) - distinct_inputs(arch, names)
    if options.miss_dropout > 0:
        token += sum(-(-arch.by_name[n].in_features // r) * r for n in graded)
    return step, token


def make_config(spec, options):
    from peft import MissConfig

    init = True if options.init_weights == "true" else options.init_weights
    return peft_config(MissConfig, r=options.r, init_weights=init, mini_r=options.mini_r,
                       miss_dropout=options.miss_dropout, **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config, check,
    name="miss", title="MiSS", where="linear weights (one matrix shared by every shard of the input)",
    explanation="Freezes the model and learns, for chosen linear layers, one r×out matrix: the layer's input is "
                "cut into shards of r features, summed, and multiplied by it. Half a LoRA at the same r, with a "
                "cheaper forward.",
    when_to_use="Where LoRA fits but a faster, leaner adapter at the same quality is wanted (the paper's claim).",
    default_lr=1e-3, options_type=MissOptions, mergeable=True,
    merge_reason="The shard-sum times D is a fixed linear map of x, so it folds into W: zero inference overhead.",
    peft_type="MISS", artifact="MiSS adapter", in_default_race=False,
    literature=("Kang & Yin 2024 (MiSS, abstract) claim better accuracy than LoRA and its variants with fewer "
                "trainable parameters and less memory and compute, from a shard-sharing structure.",))


def adaptation(spec, options):
    step, token = saved(spec, options)
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=step, saved_per_token=token)


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
