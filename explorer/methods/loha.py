"""LoHa (Hyeon-Woo, Ye-Bin & Oh 2022, "FedPara: Low-Rank Hadamard Product for Communication-Efficient
Federated Learning"; the LyCORIS project's LoHa), built by PEFT (``peft.tuners.loha``).

ΔW = (alpha/r)·(W1a·W1b) ⊙ (W2a·W2b), W1a, W2a ∈ ℝ^{out×r}, W1b, W2b ∈ ℝ^{r×in}: 2·r·(in + out) trainable
parameters per adapted linear layer, twice LoRA's at the same r, for an update whose rank can reach r².

FLOPs, as ``peft.tuners.loha.layer`` runs them: each forward builds ΔW (two out×r×in products, in the custom
autograd function HadaWeight, whose backward recomputes both and takes four gradient products), then applies
it as a second dense product F.linear(x, ΔW) beside the frozen one: unmerged, LoHa costs a full extra layer
per token, so merging matters more than for LoRA.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("loha", "LoHa")


@dataclass
class LoHaOptions:
    r: int = option(8, "LoHa rank (PEFT's LoHaConfig.r): each of the two factors has rank r, their elementwise "
                    "product up to r².", min=1, max=1024)
    alpha: int = option(8, "Scaling numerator: ΔW is multiplied by alpha/r.", min=1, max=65536)
    rank_dropout: float = option(0.0, "Dropout on ΔW's rows during training.", min=0.0, max=0.9)
    module_dropout: float = option(0.0, "Probability of skipping the whole LoHa update for a training step.",
                                   min=0.0, max=0.9)
    target_preset: str = preset_option("LoHa")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def per_module(m, options):
    r = options.r
    return 2 * r * (m.in_features + m.out_features), f"2·{r}·({m.in_features}+{m.out_features})"


def products(m, options):
    weight = 2 * m.out_features * options.r * m.in_features  # one factor product, out×r×in
    dense = 2 * m.in_features * m.out_features                # F.linear(x, ΔW) per token
    return (Product(2 * weight, 6 * weight, 0, per_token=False),  # HadaWeight: 2 products; backward 2 again + 4
            Product(dense, dense, dense))                          # ΔW trains: weight gradient; input's if needed


def saved_per_step(spec, options) -> int:
    """What autograd keeps once per forward (``peft.tuners.loha.layer.Linear._get_delta_activations``), in elements
    at the activations' width: ΔW (HadaWeight's output, out×in, a new tensor every forward), which F.linear(x, ΔW)
    keeps for its input's gradient where that input needs one (explorer.methods.saved_tensors); the scale
    (``torch.tensor(self.scaling)``, one element) HadaWeight saves beside its factors (parameters, not counted); and
    with rank_dropout the row mask (out × 1) that ``weight *= drop`` keeps for ΔW's gradient (get_delta_weight)."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    delta = sum(arch.by_name[n].out_features * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))
    masks = sum(arch.by_name[n].out_features for n in names) if options.rank_dropout > 0 else 0
    return delta + len(names) + masks


def make_config(spec, options):
    from peft import LoHaConfig

    return peft_config(LoHaConfig, r=options.r, alpha=options.alpha, rank_dropout=options.rank_dropout,
                       module_dropout=options.module_dropout, **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config,
    name="loha", title="LoHa", where="linear weights (a Hadamard product of two low-rank updates)",
    explanation="Freezes the model and learns, for chosen linear layers, ΔW = (W1a·W1b) ⊙ (W2a·W2b): the "
                "elementwise product of two rank-r matrices, whose rank can reach r². Twice LoRA's parameters at "
                "the same r.",
    when_to_use="When LoRA's rank limits what the update can express and more rank per parameter is wanted; "
                "popular for image-generation adapters (LyCORIS).",
    default_lr=1e-3, options_type=LoHaOptions, mergeable=True,
    merge_reason="ΔW has the shape of W, so W + ΔW is an ordinary weight: zero inference overhead once merged.",
    peft_type="LOHA", artifact="LoHa adapter", in_default_race=False,
    literature=("Hyeon-Woo et al. 2022 (FedPara, abstract) claim 3 to 10 times lower communication costs than "
                "the original models in federated learning at comparable performance, from a low-rank Hadamard "
                "product whose rank is not limited to r.",))


def adaptation(spec, options):
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=saved_per_step(spec, options))


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
