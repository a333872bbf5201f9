"""HiRA (Huang et al. 2025, "HiRA: Parameter-Efficient Hadamard High-Rank Adaptation for Large Language Models"),
built by PEFT (``peft.tuners.hira``).

LoRA's two factors, multiplied entry by entry with the frozen weight: ΔW = W ⊙ (B·A). Trained: A (r × in) and
B (out × r), so r·(in + out) parameters per adapted linear layer, LoRA's count at the same rank
(``HiraLayer.update_layer``); but the Hadamard product with W lets ΔW reach a high rank. B starts at zero, so
training starts from the base model.

FLOPs, as ``peft.tuners.hira.layer.Linear.forward`` runs them: each forward forms the out×in product B·A
(``torch.mm(A.T, B.T)``: 2·in·r·out, once per forward, not per token; both factors' gradients in backward, twice
that), multiplies W by it entry by entry (element-wise: not counted by torch's counter nor here) and runs
F.linear(x, W ⊙ B·A) beside the frozen layer: 2·in·out per token, that weight's gradient always, the input's if
needed. So unmerged HiRA costs a second full layer per adapted layer. Merged, W ⊙ B·A is added to W (PEFT keeps a
copy of W to unmerge): no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("hira", "HiRA", conv1d=True)
INITS = ("true", "gaussian", "false")


@dataclass
class HiraOptions:
    r: int = option(32, "Rank of the factors B·A (PEFT's HiraConfig.r, its default): LoRA's count at this rank; "
                    "the update W ⊙ B·A itself can have a much higher rank.", min=1, max=4096)
    hira_dropout: float = option(0.0, "Dropout on the HiRA path's input during training.", min=0.0, max=0.9)
    init_weights: str = option("true", "PEFT's init_weights: true (A as nn.Linear's default, B zero: training "
                               "starts from the base model), gaussian (A normal with std 1/r, B zero), or false "
                               "(both random: the adapted model differs from the base before training).",
                               choices=INITS)
    target_preset: str = preset_option("HiRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def per_module(m, options):
    return options.r * (m.in_features + m.out_features), f"{options.r}·({m.in_features}+{m.out_features})"


def products(m, options):
    dense = 2 * m.in_features * m.out_features  # F.linear(x, W ⊙ B·A): its weight trains; the input's grad if needed
    factors = 2 * m.in_features * options.r * m.out_features  # B·A once per forward; both factors' grads in backward
    return Product(factors, 2 * factors, 0, per_token=False), Product(dense, dense, dense)


def saved_per_step(spec, options) -> int:
    """What autograd keeps once per forward (``peft.tuners.hira.layer.Linear.forward``), in elements at the
    activations' width: W ⊙ (B·A)ᵀ (out×in, a new tensor every forward), which F.linear keeps for its input's
    gradient where that input needs one (explorer.methods.saved_tensors). B·A itself is not kept: the product with
    the frozen W keeps W (a parameter) for its gradient. On a transformers Conv1D layer (GPT-2) it is kept too:
    PEFT's ``transpose(weight, fan_in_fan_out)`` wraps the transposed frozen weight in a new nn.Parameter, which
    requires a gradient, so the product keeps (B·A)ᵀ (out×in) for it."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    conv1d = [n for n in names if arch.by_name[n].kind == "conv1d"]
    return sum(arch.by_name[n].out_features * arch.by_name[n].in_features
               for n in [*inputs_with_grad(arch, names), *conv1d])


def saved_per_token(spec, options) -> int:
    """With hira_dropout, per token: each layer's dropped-out copy of its input, which F.linear keeps for the
    weight's gradient, and where the input needs a gradient (explorer.methods.saved_tensors) the dropout's mask at
    the input's width, as torch's unfused dropout keeps it on CPU (CUDA's fused one keeps a byte per element: there
    this over-counts); the input itself is then kept by nothing (the frozen layer needs none), so the generic count
    of the adapted layers' inputs is taken back. Without dropout, F.linear keeps the input itself (the generic
    count): 0."""
    from ..costs.memory import distinct_inputs

    if options.hira_dropout <= 0:
        return 0
    arch = spec.arch
    names = TUNER.targets(spec, options)
    return (sum(arch.by_name[n].in_features for n in [*names, *inputs_with_grad(arch, names)])
            - distinct_inputs(arch, names))


def make_config(spec, options):
    from peft import HiraConfig

    init = {"true": True, "false": False}.get(options.init_weights, options.init_weights)
    return peft_config(HiraConfig, r=options.r, hira_dropout=options.hira_dropout, init_weights=init,
                       fan_in_fan_out=TUNER.conv1d_targets(spec, options), **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config,
    name="hira", title="HiRA", where="linear weights (LoRA's factors multiplied entry by entry with the weight)",
    explanation="LoRA's two small matrices, but their product scales each entry of the frozen weight instead of "
                "being added to it: ΔW = W ⊙ (B·A). The same count as LoRA at rank r, while the update can have a "
                "high rank, shaped by the pretrained weight.",
    when_to_use="Where LoRA's low rank seems to limit quality and a LoRA-sized adapter is wanted; unmerged it "
                "costs about one more layer per adapted layer, so merge it for inference.",
    default_lr=3e-3, options_type=HiraOptions, mergeable=True,
    merge_reason="W ⊙ B·A has the shape of W, so it is added into W: zero inference overhead (PEFT keeps a copy of "
                 "the original W to unmerge).",
    peft_type="HIRA", artifact="HiRA adapter", in_default_race=False,
    literature=("Huang et al. 2025 (HiRA, ICLR 2025, abstract) claim that the Hadamard product keeps high-rank "
                "update parameters and improves model capacity, and that HiRA outperforms LoRA and its variants on "
                "several tasks.",))


def adaptation(spec, options):
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=saved_per_step(spec, options),
                               saved_per_token=saved_per_token(spec, options))


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
