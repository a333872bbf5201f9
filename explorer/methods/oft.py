"""OFT (Qiu et al. 2023, "Controlling Text-to-Image Diffusion by Orthogonal Finetuning"; Qiu et al. 2025,
"Orthogonal Finetuning Made Scalable", the input-centric form PEFT 0.21 runs), built by PEFT (``peft.tuners.oft``).

Each adapted linear layer's input is rotated by a block-diagonal orthogonal matrix R before the frozen weight:
y = W·(R·x). The input's in_features are cut into r blocks of oft_block_size (one of the two is given, PEFT
derives the other: r·oft_block_size = in_features, adjusted to a divisor); each block's rotation is the Cayley
transform of a skew-symmetric matrix, stored as its upper triangle: r·b·(b-1)/2 trainable parameters per layer
(one block's b·(b-1)/2 with block_share).

FLOPs, as ``peft.tuners.oft.layer.OFTRotationModule`` runs them: the Cayley-Neumann series builds the rotations
once per forward (num_cayley_neumann_terms - 2 batched products of b×b blocks, trained on both sides; the exact
Cayley transform is a linear solve, which torch's counter does not count, but its backward takes one product
for the matrix's gradient), then one batched product rotates the
input per token (2·in·b FLOPs), and the frozen product now pays its input gradient, since its input depends on
trained weights. Merged, R folds into W (W·R): no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("oft", "OFT")


@dataclass
class OFTOptions:
    oft_block_size: int = option(32, "Size b of each orthogonal block (PEFT's OFTConfig.oft_block_size); "
                                 "0 to give r instead. Parameters grow as b²/2 per block.", min=0, max=4096)
    r: int = option(0, "Number of blocks per layer (PEFT's OFTConfig.r); 0 when oft_block_size is given: "
                    "r·oft_block_size = the layer's input features.", min=0, max=4096)
    module_dropout: float = option(0.0, "Multiplicative dropout: the probability of a block being the identity "
                                   "for a training step.", min=0.0, max=0.9)
    coft: bool = option(False, "Constrained OFT: keep each rotation within eps of the identity.")
    eps: float = option(6e-5, "How far constrained OFT may rotate (only with coft).", min=0.0, max=1.0)
    block_share: bool = option(False, "One rotation block shared by all blocks of a layer.")
    use_cayley_neumann: bool = option(True, "Approximate the Cayley transform by a Neumann series (faster, less "
                                      "exactly orthogonal); off: an exact linear solve.")
    num_cayley_neumann_terms: int = option(5, "Terms of the Neumann series.", min=1, max=32)
    target_preset: str = preset_option("OFT")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def blocks(m, options) -> tuple[int, int]:
    """(r, block size) of one layer, as peft.tuners.oft.layer.OFTLayer.update_layer derives them."""
    from peft.tuners.oft.layer import OFTLayer

    n = m.in_features
    if options.r == 0:
        size = options.oft_block_size
        if n % size != 0 or size > n:
            size = OFTLayer.adjust_oft_parameters(None, n, size)
        return n // size, size
    r = options.r
    if n % r != 0 or r > n:
        r = OFTLayer.adjust_oft_parameters(None, n, r)
    return r, n // r


def per_module(m, options):
    r, b = blocks(m, options)
    stored = 1 if options.block_share else r
    return stored * (b * (b - 1) // 2), f"{stored}·{b}·({b}-1)/2"


def products(m, options):
    r, b = blocks(m, options)
    stored = 1 if options.block_share else r
    terms = options.num_cayley_neumann_terms
    series = max(terms - 2, 0) if options.use_cayley_neumann else 0  # bmm count in OFTRotationModule._cayley_batch
    rotate = 2 * m.in_features * b                                  # x's blocks times their rotations, per token
    out = [Product(rotate, rotate, rotate, feeds_base=True)]
    if series:
        out.append(Product(series * 2 * stored * b ** 3, series * 4 * stored * b ** 3, 0, per_token=False))
    if not options.use_cayley_neumann:  # the solve's gradient for its matrix is one product (-Xᵀ·grad)
        out.append(Product(0, 2 * stored * b ** 3, 0, per_token=False))
    return tuple(out)


def cayley_saved(options) -> int:
    """b×b matrices per stored block that ``OFTRotationModule._cayley_batch`` keeps for backward. The Neumann series
    with T terms keeps the skew matrix Q and the powers Q², ..., Q^(T-2) that the next torch.bmm multiplies by Q
    (with T = 3 the single product Q²·Q keeps both its operands; with T ≤ 2 it is only in-place sums). Without it,
    torch.linalg.solve(I + Q, I − Q, left=False) keeps three (I + Q's LU factors, the solution R itself and one
    more) and b int32 pivots per block (saved_per_step counts those)."""
    if not options.use_cayley_neumann:
        return 3
    terms = options.num_cayley_neumann_terms
    return 0 if terms <= 2 else max(terms - 2, 2)


def saved_per_step(spec, options) -> int:
    """What autograd keeps once per forward (``peft.tuners.oft.layer.OFTRotationModule.forward``), in elements at the
    activations' width, per adapted layer with r blocks of size b (r·b = in): the Cayley transform's matrices
    (cayley_saved, each stored·b², stored = 1 with block_share, else r; the solve's pivots, stored·b int32), plus
    the rotation that einsum("...rk,rkc->...rc", x, R) keeps for its input's gradient where that input needs one
    (explorer.methods.saved_tensors): r·b² = in·b, a tensor of its own after the Neumann series' in-place sums, or
    with block_share the one block repeated r times (the solve's R is kept already). The input's blocks it keeps are
    a view of the input itself (the generic count); the frozen layer then keeps nothing."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    solve = not options.use_cayley_neumann
    total = 0
    for n in names:
        r, b = blocks(arch.by_name[n], options)
        stored = 1 if options.block_share else r
        total += cayley_saved(options) * stored * b * b + (stored * b if solve else 0)
    if options.block_share or not solve:
        for n in inputs_with_grad(arch, names):
            r, b = blocks(arch.by_name[n], options)
            total += r * b * b
    return total


def make_config(spec, options):
    from peft import OFTConfig

    return peft_config(OFTConfig, r=options.r, oft_block_size=options.oft_block_size,
                       module_dropout=options.module_dropout, coft=options.coft, eps=options.eps,
                       block_share=options.block_share, use_cayley_neumann=options.use_cayley_neumann,
                       num_cayley_neumann_terms=options.num_cayley_neumann_terms, **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config,
    name="oft", title="OFT", where="linear layers' inputs (a learned block-diagonal rotation)",
    explanation="Freezes the model and learns, for chosen linear layers, an orthogonal block-diagonal rotation "
                "of the layer's input: W·(R·x). A rotation keeps the angles between the frozen weight's neurons, "
                "which the paper argues preserves what the model knows.",
    when_to_use="When preserving the base model's behaviour matters (less forgetting is the paper's claim); "
                "LLaMA-Factory offers it beside LoRA.",
    default_lr=1e-3, options_type=OFTOptions, mergeable=True,
    merge_reason="W·R is an ordinary weight of W's shape, so the rotation folds into W: zero inference overhead.",
    peft_type="OFT", artifact="OFT adapter", in_default_race=False,
    literature=("Qiu et al. 2023 (OFT, abstract) claim orthogonal finetuning provably preserves the hyperspherical "
                "energy of the pretrained weights, keeping their semantic generation ability, and converges more "
                "stably than LoRA; Qiu et al. 2025 claim the input-centric form PEFT runs is up to 10x faster to "
                "train and 3x leaner in GPU memory than the original.",))


def adaptation(spec, options):
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=saved_per_step(spec, options))


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
