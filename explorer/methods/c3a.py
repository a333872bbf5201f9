"""C3A (Chen et al. 2024, "Parameter-Efficient Fine-Tuning via Circular Convolution"), built by PEFT
(``peft.tuners.c3a``).

ΔW is block-circulant: the out×in weight is cut into (out/b)×(in/b) blocks of b×b, and each block is a circulant
matrix defined by one trained vector of b entries (``C3ALayer.update_layer``: a kernel of shape
(out/b, in/b, b)). So in·out/b trainable parameters per adapted linear layer, while ΔW can have full rank. b is
PEFT's block_size, which must divide every target's in and out features; PEFT's advice is the greatest common
divisor of those widths, which block_size 0 picks here.

FLOPs, as ``peft.tuners.c3a.utils.BlockCircularConvolution`` runs them: x is cut into in/b blocks, FFT'd, mixed
with the FFT of the kernels by one batched complex product (an einsum over the in/b blocks for each of the b
frequencies: 2·in·out/b per token), and transformed back. The FFTs are not matmuls: torch's counter does not count
them, and neither does this formula (their real cost is about (in+out)·log₂ b per token). Its custom backward
always computes both the input's and the kernel's gradient, one product of the same size each, whether or not the
layer's input needs a gradient. (The kernel's gradient sums over the tokens: a single token, never a training
batch, would make it element-wise.) The frozen layer runs as usual beside it. Merged, ΔW folds into W: no overhead.

PEFT's C3A starts from a random kernel (xavier_uniform, its default), not from zero: the adapted model differs
from the base before the first step; init_weights=true starts from zero.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, Term
from .tuners import Tuner, exclude_option, grouped_terms, modules_option, peft_config, preset_option

TUNER = Tuner("c3a", "C3A")
INITS = ("xavier_uniform", "kaiming_uniform", "gaussian", "true")


@dataclass
class C3AOptions:
    block_size: int = option(0, "Side of the circulant blocks (PEFT's C3AConfig.block_size): it must divide every "
                             "target's in and out features; a larger block trains fewer parameters (in·out/b per "
                             "layer). 0 = the greatest common divisor of those widths, as PEFT advises (PEFT's "
                             "default 256 does not divide widths such as SmolLM2-135M's 576).", min=0, max=65536)
    init_weights: str = option("xavier_uniform", "PEFT's init_weights: the kernels' random start (xavier_uniform, "
                               "PEFT's default; kaiming_uniform; gaussian), or true for zeros (training starts from "
                               "the base model).", choices=INITS)
    target_preset: str = preset_option("C3A")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def resolved(spec, options) -> C3AOptions:
    """The options with block_size chosen (0: the greatest common divisor of the targets' widths) and checked as
    PEFT checks each layer (in ``update_layer``, mid-build) before anything is built."""
    names = TUNER.targets(spec, options)
    modules = [spec.arch.by_name[n] for n in names]
    common = math.gcd(*(w for m in modules for w in (m.in_features, m.out_features)))
    size = options.block_size or common
    for m in modules:
        for side, width in (("input", m.in_features), ("output", m.out_features)):
            if width % size:
                raise ExplorerError(f"PEFT: the block size should be a factor of the {side} size; {m.name} has "
                                    f"{width} and block_size is {size}. The widths of these targets share {common}: "
                                    "use a divisor of it (or 0 to choose it).")
    return dataclasses.replace(options, block_size=size)


def per_module(m, o):
    b = o.block_size
    count = m.in_features * m.out_features // b
    return count, f"({m.out_features}/{b})·({m.in_features}/{b})·{b}"


def terms(spec, options) -> list[Term]:
    o = resolved(spec, options)
    return grouped_terms(spec, TUNER.targets(spec, o), lambda m: per_module(m, o))


def products(m, block_size: int) -> tuple:
    """Each einsum sums over one axis: over the in/b input blocks (forward), the out/b output blocks (the input's
    gradient) or the tokens (the kernel's gradient). torch runs a sum over an axis of length 1 as an element-wise
    product, not a matmul (a k_proj as wide as the block has one output block), so it counts nothing there."""
    mix = 2 * m.in_features * m.out_features // block_size  # one batched complex product, per token
    forward = mix if m.in_features > block_size else 0
    input_grad = mix if m.out_features > block_size else 0
    return (Product(forward, input_grad + mix, 0),)  # backward: the input's and the kernel's gradient, always both


def adaptation(spec, options) -> Adaptation:
    o = resolved(spec, options)
    return Adaptation(products={n: products(spec.arch.by_name[n], o.block_size) for n in TUNER.targets(spec, o)})


def make_config(spec, options):
    from peft import C3AConfig

    o = resolved(spec, options)
    init = True if o.init_weights == "true" else o.init_weights
    return peft_config(C3AConfig, block_size=o.block_size, init_weights=init, **TUNER.peft_kwargs(spec, o))


def apply(model, spec, options):
    from peft import get_peft_model

    return get_peft_model(model, make_config(spec, options))


METHOD = Method(
    name="c3a", title="C3A", where="linear weights (a block-circulant update: circular convolutions)",
    explanation="Freezes the model and learns, for chosen linear layers, an update made of circulant blocks: each "
                "b×b block is fixed by one vector of b numbers, so the update has in·out/b parameters yet can have "
                "full rank. It runs as a circular convolution (FFTs), not as a matrix product.",
    when_to_use="When a high-rank update is wanted at a LoRA-like parameter count; larger blocks train fewer "
                "parameters.",
    default_lr=1e-3, options_type=C3AOptions, mergeable=True,
    merge_reason="The block-circulant ΔW has the shape of W, so it folds into W: zero inference overhead.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply, validate=make_config,
    conv1d_layer=TUNER.conv1d, peft_type="C3A", artifact="C3A adapter", in_default_race=False,
    literature=("Chen et al. 2024 (C3A, abstract) claim high-rank adaptation with better performance that also "
                "excels in compute and memory use, and that C3A consistently outperforms LoRA and its variants "
                "across fine-tuning tasks.",))
