"""PSOFT (Wu et al. 2025, "Efficient Orthogonal Fine-Tuning with Principal Subspace Adaptation", ICLR 2026), built by
PEFT (``peft.tuners.psoft``).

Orthogonal fine-tuning inside a layer's principal subspace: the top-r singular directions of W give two frozen
factors, A (r × in) and B (out × r), and an r × r transformation R between them trains, ΔW = (alpha/r)·B·(R − I)·A
(``PsoftLayer.update_layer``). With psoft_orth R is kept orthogonal by the Cayley map of a skew-symmetric matrix,
whose r·(r − 1)/2 upper entries train (OFT's parameterisation); without it R is a free r × r matrix. psoft_mag_a
and psoft_mag_b add a trained scaling vector of r on each side of R. So per layer r·(r − 1)/2 (or r²) + r + r
parameters: it depends on r only, not on the layer's widths. PEFT refuses an r above a layer's smaller width.

A and B come from the SVD of W when PEFT builds the adapter; they are non-persistent buffers (rebuilt from the
base model when a run reloads, not saved): r·(in + out) float32 numbers per layer held in memory.

FLOPs, as ``peft.tuners.psoft.layer.Linear.forward`` runs them: x·Aᵀ (2·in·r per token), its product with Rᵀ
(2·r·r) and (x·Aᵀ·Rᵀ − x·Aᵀ)·Bᵀ (2·r·out). Backward: the input's gradient through B always (R trains), R's gradient
(2·r·r per token), and through R and A where the layer's input needs one. R itself is built once per forward: the
Cayley map solves one r × r linear system (torch's counter counts no solve, but counts the product its backward
takes, 2·r³); with use_cayley_neumann the series instead takes num_cayley_neumann_terms − 2 products of 2·r³ (two with
three terms, none with fewer; their gradients twice that). Merged, ΔW folds into W: no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .base import Adaptation
from .saved_tensors import dropout_per_token, inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("psoft", "PSOFT")
DEFAULT_RANK = 32  # PEFT's PsoftConfig.r


@dataclass
class PsoftOptions:
    r: int = option(0, "Size of the trained r × r transformation between the principal subspace's factors (PEFT's "
                    "PsoftConfig.r); at most every target's smaller width. 0 = PEFT's 32, or the smallest target "
                    "width where that is less (the demo model's 16-wide key projection).", min=0, max=4096)
    psoft_alpha: int = option(32, "Scaling numerator: ΔW is multiplied by psoft_alpha/r (as LoRA's alpha).", min=1,
                              max=10**6)
    psoft_dropout: float = option(0.0, "Dropout on the PSOFT path's input during training.", min=0.0, max=0.9)
    ab_svd_init: str = option("psoft_init", "How the frozen factors split the singular values: 'psoft_init' puts "
                              "them in B (A's rows orthonormal, PSOFT); 'pissa_init' splits their square roots "
                              "between A and B (as PiSSA).", choices=("psoft_init", "pissa_init"))
    psoft_svd: str = option("full", "SVD used to find the subspace: 'full' (exact) or 'lowrank' (randomised, "
                            "faster on wide layers).", choices=("full", "lowrank"))
    psoft_svd_lowrank_niter: int = option(10, "Power iterations of the 'lowrank' SVD.", min=1, max=1000)
    random_seed: int = option(0, "Seed of the 'lowrank' SVD's random projection.", min=0, max=2**31 - 1)
    psoft_orth: bool = option(True, "Keep R orthogonal (Cayley map of r·(r−1)/2 trained entries); false trains a "
                              "free r × r matrix.")
    psoft_mag_a: bool = option(True, "Train a scaling vector (r) on R's input side.")
    psoft_mag_b: bool = option(True, "Train a scaling vector (r) on R's output side.")
    use_cayley_neumann: bool = option(False, "Approximate the Cayley map by a Neumann series (no linear solve).")
    num_cayley_neumann_terms: int = option(5, "Terms of the Neumann series (with use_cayley_neumann).", min=1,
                                           max=100)
    target_preset: str = preset_option("PSOFT")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def resolved(spec, options) -> PsoftOptions:
    """The options with r chosen (0: PEFT's 32, or the smallest target width below it) and checked as PEFT checks
    each layer (in ``update_layer``, mid-build) before anything is built."""
    modules = [spec.arch.by_name[n] for n in TUNER.targets(spec, options)]
    smallest = min(modules, key=lambda m: min(m.in_features, m.out_features))
    width = min(smallest.in_features, smallest.out_features)
    r = options.r or min(DEFAULT_RANK, width)
    if r > width:
        raise ExplorerError(f"PEFT: r ({r}) must be at most min(in_features, out_features) of every target; "
                            f"{smallest.name} has {smallest.in_features} → {smallest.out_features}: use r ≤ {width}.")
    return dataclasses.replace(options, r=r)


def per_layer(r: int, o) -> tuple[int, str]:
    rotation = (r * (r - 1) // 2, f"{r}·{r - 1}/2 (R)") if o.psoft_orth else (r * r, f"{r}² (R)")
    vectors = [(r, f"{r} ({side})") for side, on in (("mag_b", o.psoft_mag_b), ("mag_a", o.psoft_mag_a)) if on]
    parts = [rotation, *vectors]
    return sum(c for c, _ in parts), " + ".join(e for _, e in parts)


def products(m, o):
    r = o.r
    down, turn, up = 2 * m.in_features * r, 2 * r * r, 2 * r * m.out_features
    cube = 2 * r * r * r
    if not o.psoft_orth:
        build = Product(0)
    elif o.use_cayley_neumann:  # Q², then one more power per term: t − 2 products of r × r (at least two from
        t = o.num_cayley_neumann_terms  # three terms on; none below), each with two gradients (OFT v2's series)
        powers = 0 if t <= 2 else max(t - 2, 2)
        build = Product(cube * powers, 2 * cube * powers, 0, per_token=False)
    else:  # torch.linalg.solve: not counted forward; its backward's product is
        build = Product(0, cube, 0, per_token=False)
    return (Product(down, 0, down),       # x·Aᵀ: A frozen
            Product(turn, turn, turn),    # ·Rᵀ: R's gradient; x·Aᵀ's where the input needs one
            Product(up, up, 0),           # ·Bᵀ: B frozen, its input depends on R
            build)


def make_config(spec, options):
    from peft import PsoftConfig

    o = resolved(spec, options)
    return peft_config(PsoftConfig, r=o.r, psoft_alpha=o.psoft_alpha, psoft_dropout=o.psoft_dropout,
                       ab_svd_init=o.ab_svd_init, psoft_svd=o.psoft_svd,
                       psoft_svd_lowrank_niter=o.psoft_svd_lowrank_niter, random_seed=o.random_seed,
                       psoft_orth=o.psoft_orth, psoft_mag_a=o.psoft_mag_a, psoft_mag_b=o.psoft_mag_b,
                       use_cayley_neumann=o.use_cayley_neumann, num_cayley_neumann_terms=o.num_cayley_neumann_terms,
                       **TUNER.peft_kwargs(spec, o))


GENERIC = linear_method(
    TUNER, lambda m, o: per_layer(o.r, o), products, make_config,
    name="psoft", title="PSOFT", where="linear weights (an orthogonal turn inside their principal subspace)",
    explanation="Finds each chosen layer's top-r singular directions (its principal subspace), freezes them as two "
                "factors, and trains only a small r × r rotation (plus two scaling vectors) between them: "
                "orthogonal fine-tuning at a cost that does not grow with the layer's width.",
    when_to_use="When an OFT-style update (it keeps the geometry of what the layer does) is wanted at a tiny, "
                "width-independent parameter count; the SVD at the start takes a moment on large layers.",
    default_lr=1e-3, options_type=PsoftOptions, mergeable=True,
    merge_reason="ΔW = B·(R − I)·A has the shape of W, so it folds into W: zero inference overhead.",
    peft_type="PSOFT", artifact="PSOFT adapter", in_default_race=False,
    literature=("Wu et al. 2025 (PSOFT, abstract) claim that orthogonal fine-tuning confined to the principal "
                "subspace achieves semantic preservation, expressiveness and multi-dimensional efficiency across "
                "35 NLP and CV tasks on four representative models.",))


def terms(spec, options):
    return GENERIC.terms(spec, resolved(spec, options))


def saved(spec, o) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond explorer.costs.memory's generic count (every adapted
    layer's input), as ``peft.tuners.psoft.layer.Linear.forward`` runs (psoft_dropout > 0:
    saved_tensors.dropout_per_token, the frozen A reading the dropped copy). Per token: x·Aᵀ (r), kept by R's
    product for R's gradient, and not the layer's input (A and B are frozen buffers: only they are read back). Per
    step, ``OrthLayer.get_matrix``'s r × r tensors: the Cayley map's torch.linalg.solve keeps I − Q, its LU, its
    result and the LU's int32 pivots (r, one element each at float32); the Neumann series instead keeps Q and its
    powers (max(t − 2, 2) matrices from three terms on) and its sum where a scaling vector's product keeps it (its
    cayley_neumann_eps rescaling, PEFT's default None, depends on Q's norm: not counted); with both scaling vectors,
    vector_b·R, kept by the product with vector_a; and the final R, a new tensor where a scaling vector or the
    series made one, kept by (x·Aᵀ)·Rᵀ where the layer's input needs a gradient (explorer.methods.saved_tensors)."""
    from ..costs.memory import distinct_inputs

    arch = spec.arch
    names = TUNER.targets(spec, o)
    r, t = o.r, o.num_cayley_neumann_terms
    build = 0
    if o.psoft_orth and o.use_cayley_neumann:
        build = (0 if t <= 2 else max(t - 2, 2)) * r * r
        build += r * r if o.psoft_mag_a or o.psoft_mag_b else 0  # the series' sum, kept by a scaling vector's product
    elif o.psoft_orth:
        build = 3 * r * r + r
    if o.psoft_mag_a and o.psoft_mag_b:
        build += r * r
    final = r * r if (o.psoft_mag_a or o.psoft_mag_b or (o.psoft_orth and o.use_cayley_neumann)) else 0
    step = build * len(names) + final * len(inputs_with_grad(arch, names))
    dropout = dropout_per_token(arch, names, []) if o.psoft_dropout > 0 else 0
    return step, r * len(names) - distinct_inputs(arch, names) + dropout


def adaptation(spec, options) -> Adaptation:
    """The products, the frozen factors A and B as memory (float32 buffers, not saved), and what its forward keeps
    for backward (saved)."""
    o = resolved(spec, options)
    names = TUNER.targets(spec, o)
    held = sum(o.r * (spec.arch.by_name[n].in_features + spec.arch.by_name[n].out_features) for n in names)
    step, token = saved(spec, o)
    return dataclasses.replace(GENERIC.adaptation(spec, o), vera_shared=held, saved_per_step=step,
                               saved_per_token=token)


METHOD = dataclasses.replace(GENERIC, terms=terms, adaptation=adaptation)
