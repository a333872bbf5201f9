"""LoKr (Yeh et al. 2024, "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to Model
Evaluation"; the LyCORIS project's LoKr), built by PEFT (``peft.tuners.lokr``).

ΔW = (alpha/r)·W1 ⊗ W2, a Kronecker product: out = a·b and in = c·d are each split into two factors (PEFT's
``factorization``, as near the square root as the divisors allow, or at ``decompose_factor``); W1 ∈ ℝ^{a×c}
is a small full matrix (or W1a·W1b with ``decompose_both``), W2 ∈ ℝ^{b×d} is the low-rank W2a·W2b (or a full
matrix when r ≥ max(b, d)/2, PEFT's rule). Its count per layer is therefore far below LoRA's on wide layers.

FLOPs, as ``peft.tuners.lokr.layer`` runs them: each forward builds the factor products (matmuls, trained both
sides), the Kronecker product (elementwise: no matmul), then applies ΔW as a second dense product
F.linear(x, ΔW) beside the frozen one, so unmerged it costs a full extra layer per token.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("lokr", "LoKr")


@dataclass
class LoKrOptions:
    r: int = option(8, "LoKr rank (PEFT's LoKrConfig.r) of the low-rank Kronecker factor W2 = W2a·W2b.",
                    min=1, max=1024)
    alpha: int = option(8, "Scaling numerator: ΔW is multiplied by alpha/r.", min=1, max=65536)
    decompose_both: bool = option(False, "Also write the left factor W1 as a rank-r product (PEFT's rule: only "
                                  "where r is below half its larger side).")
    decompose_factor: int = option(-1, "Split each dimension into factors near this number (-1: near its square "
                                   "root).", min=-1, max=65536)
    rank_dropout: float = option(0.0, "Dropout on ΔW's rows during training.", min=0.0, max=0.9)
    module_dropout: float = option(0.0, "Probability of skipping the whole LoKr update for a training step.",
                                   min=0.0, max=0.9)
    target_preset: str = preset_option("LoKr")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def factor_shapes(m, options):
    """((a, c), (b, d), W1 full?, W2 full?) as peft.tuners.lokr.layer.LoKrLayer.update_layer decides them."""
    from peft.tuners.lokr.layer import factorization

    c, d = factorization(m.in_features, options.decompose_factor)
    a, b = factorization(m.out_features, options.decompose_factor)
    r = options.r
    return (a, c), (b, d), not (options.decompose_both and r < max(a, c) / 2), not (r < max(b, d) / 2)


def per_module(m, options):
    (a, c), (b, d), w1_full, w2_full = factor_shapes(m, options)
    r = options.r
    w1 = a * c if w1_full else r * (a + c)
    w2 = b * d if w2_full else r * (b + d)
    w1_text = f"{a}·{c}" if w1_full else f"{r}·({a}+{c})"
    w2_text = f"{b}·{d}" if w2_full else f"{r}·({b}+{d})"
    return w1 + w2, f"{w1_text} (W1) + {w2_text} (W2)"


def products(m, options):
    (a, c), (b, d), w1_full, w2_full = factor_shapes(m, options)
    r = options.r
    out = []
    for full, rows, cols in ((w1_full, a, c), (w2_full, b, d)):
        if not full:  # W = Wa·Wb, both trained: two gradient products in backward
            out.append(Product(2 * rows * r * cols, 4 * rows * r * cols, 0, per_token=False))
    dense = 2 * m.in_features * m.out_features  # F.linear(x, ΔW) per token
    out.append(Product(dense, dense, dense))
    return tuple(out)


def saved_per_step(spec, options) -> int:
    """What autograd keeps once per forward (``peft.tuners.lokr.layer.LoKrLayer.get_delta_weight``), in elements at
    the activations' width: each factor that is a product of two trained matrices (W2 = W2a·W2b, b×d; W1 = W1a·W1b,
    a×c, with decompose_both), a new tensor that torch.kron (make_kron) keeps for the other factor's gradient (a
    full factor is a parameter, not counted); ΔW = W1 ⊗ W2 (out×in), which F.linear(x, ΔW) keeps for its input's
    gradient where that input needs one (explorer.methods.saved_tensors); with rank_dropout the row mask (out × 1)
    that ``weight *= drop`` keeps for ΔW's gradient."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    delta = sum(arch.by_name[n].out_features * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))
    factors = 0
    for n in names:
        (a, c), (b, d), w1_full, w2_full = factor_shapes(arch.by_name[n], options)
        factors += (0 if w1_full else a * c) + (0 if w2_full else b * d)
    masks = sum(arch.by_name[n].out_features for n in names) if options.rank_dropout > 0 else 0
    return delta + factors + masks


def make_config(spec, options):
    from peft import LoKrConfig

    return peft_config(LoKrConfig, r=options.r, alpha=options.alpha, decompose_both=options.decompose_both,
                       decompose_factor=options.decompose_factor, rank_dropout=options.rank_dropout,
                       module_dropout=options.module_dropout, **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config,
    name="lokr", title="LoKr", where="linear weights (a Kronecker product of a small and a low-rank factor)",
    explanation="Freezes the model and learns, for chosen linear layers, ΔW = W1 ⊗ W2: the Kronecker product of "
                "a small full matrix and a low-rank one, which tiles the small matrix's pattern across the whole "
                "weight. Far fewer parameters than LoRA on wide layers.",
    when_to_use="When the adapter must be tiny yet its update full-rank; common for image-generation adapters "
                "(LyCORIS).",
    default_lr=1e-3, options_type=LoKrOptions, mergeable=True,
    merge_reason="W1 ⊗ W2 has the shape of W, so W + ΔW is an ordinary weight: zero inference overhead once merged.",
    peft_type="LOKR", artifact="LoKr adapter", in_default_race=False,
    literature=("Yeh et al. 2024 (LyCORIS, abstract) claim LoKr and the other LyCORIS methods give a more "
                "nuanced control of fidelity, diversity and text alignment than LoRA for text-to-image "
                "customization; its Kronecker factorisation is claimed to keep the update full-rank.",))


def adaptation(spec, options):
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=saved_per_step(spec, options))


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
