"""TinyLoRA (Morris et al. 2026, "Learning to Reason in 13 Parameters"), built by PEFT (``peft.tuners.tinylora``).

LoRA-XS made smaller still: each adapted weight's top r singular directions are frozen as A = √S·Vᵀ (r × in) and
B = U·√S (out × r) (``TinyLoraLayer._init_svd``; r is cut to min(r, in, out)), and the r × r matrix between them is
not trained but built as R = Σᵢ vᵢ·Pᵢ from u fixed random r × r matrices P (one set per layer, seeded by
projection_seed + the layer's index) and one trained vector v of u entries. ΔW = B·R·A. weight_tying shares v:
the targets, in model order, are cut into max(1, round(N·(1 − weight_tying))) groups of ⌊N / groups⌋ (the last takes
the rest), one v each (``TinyLoraModel._create_and_replace``): u trainable numbers per group, u in all at 1.0.
PEFT saves A, B and P in the adapter (A and B always; P with save_projection=True), so they are shown apart, as
frozen: r·(in + out) + u·r² per layer.

FLOPs, as ``peft.tuners.tinylora.layer.Linear.forward`` runs them: R is built once per forward (the einsum
"i,ijk->jk", a (1 × u)·(u × r²) product, and v's gradient, the same again), then x goes through three products per
token: F.linear(x, A) (2·in·r, A frozen: x's gradient only where x needs one), F.linear(·, R) (2·r², R trained: its
gradient, and its input's where x needs one) and F.linear(·, B) (2·r·out, B frozen; its input depends on R, so its
gradient is always paid). Merged, B·R·A folds into W: no overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .base import Adaptation, Method, Term
from .saved_tensors import dropout_per_token, inputs_with_grad
from .tuners import Tuner, exclude_option, grouped_terms, modules_option, peft_config, preset_option

TUNER = Tuner("tinylora", "TinyLoRA", conv1d=True)


@dataclass
class TinyLoraOptions:
    r: int = option(8, "Rank of the frozen SVD factors (PEFT's TinyLoraConfig.r), cut to the layer's smaller side. "
                    "8 here, not PEFT's and the paper's 2: the mixing matrix R has r² entries, so with u = 64 only "
                    "r = 8 lets every trained number count (at r = 2, 64 numbers move 4 entries).", min=1, max=4096)
    u: int = option(64, "Trained numbers per group (the length of v): each one weighs one fixed random r×r "
                    "matrix.", min=1, max=65536)
    weight_tying: float = option(0.0, "How much the adapted layers share v: 0 = each its own, 1 = one v for the "
                                 "whole model (the paper's 13 parameters are u = 13 at full tying).",
                                 min=0.0, max=1.0)
    projection_seed: int = option(42, "Seed of the fixed random matrices P (plus each layer's index).",
                                  min=0, max=2**31 - 1)
    tinylora_dropout: float = option(0.0, "Dropout on the TinyLoRA path's input during training.", min=0.0, max=0.9)
    target_preset: str = preset_option("TinyLoRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def groups(count: int, weight_tying: float) -> int:
    """PEFT's number of v vectors for ``count`` targets (every group gets at least one target: ⌊N/groups⌋ ≥ 1)."""
    return max(1, round(count * (1.0 - weight_tying)))


def rank(m, options) -> int:
    return min(options.r, m.in_features, m.out_features)


def terms(spec, options) -> list[Term]:
    names = TUNER.targets(spec, options)
    g, u = groups(len(names), options.weight_tying), options.u
    if g == len(names):  # one v per layer
        return grouped_terms(spec, names, lambda m: (u, f"{u} (v)"))
    return [Term("v, shared", g * u, f"{g} groups of the {len(names)} adapted layers × {u} (v) = {g * u:,}")]


def frozen(m, options):
    r, u = rank(m, options), options.u
    return (r * (m.in_features + m.out_features) + u * r * r,
            f"{r}·({m.in_features}+{m.out_features}) (SVD factors A, B) + {u}·{r}² (P)")


def frozen_terms(spec, options) -> list[Term]:
    return grouped_terms(spec, TUNER.targets(spec, options), lambda m: frozen(m, options))


def products(m, options) -> tuple:
    r, u = rank(m, options), options.u
    down, mix, up = 2 * m.in_features * r, 2 * r * r, 2 * r * m.out_features
    # R = v·P, once per forward, and v's gradient in backward; torch runs a sum over an axis of length 1 (u = 1) as
    # an element-wise product, which its counter skips
    build = 2 * u * r * r if u > 1 else 0
    return (Product(down, 0, down), Product(mix, mix, mix), Product(up, up, 0),
            Product(build, build, 0, per_token=False))


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond explorer.costs.memory's generic count (every adapted
    layer's input), as ``peft.tuners.tinylora.layer.Linear.forward`` trains (tinylora_dropout > 0:
    saved_tensors.dropout_per_token, the frozen A reading the dropped copy): per token x·Aᵀ (r), kept for R's
    gradient, and not the layer's input (A and B are frozen buffers: only they are read back); per step R = Σ
    v_i·P_i (r × r, ``_compute_R``), kept by the product with x·Aᵀ where the layer's input needs a gradient
    (explorer.methods.saved_tensors)."""
    from ..costs.memory import distinct_inputs

    arch = spec.arch
    names = TUNER.targets(spec, options)
    step = sum(rank(arch.by_name[n], options) ** 2 for n in inputs_with_grad(arch, names))
    dropout = dropout_per_token(arch, names, []) if options.tinylora_dropout > 0 else 0
    return step, sum(rank(arch.by_name[n], options) for n in names) - distinct_inputs(arch, names) + dropout


def adaptation(spec, options) -> Adaptation:
    arch = spec.arch
    step, token = saved(spec, options)
    return Adaptation(products={n: products(arch.by_name[n], options) for n in TUNER.targets(spec, options)},
                      vera_shared=sum(t.count for t in frozen_terms(spec, options)), saved_per_step=step,
                      saved_per_token=token)


def make_config(spec, options):
    from peft import TinyLoraConfig

    return peft_config(TinyLoraConfig, r=options.r, u=options.u, weight_tying=options.weight_tying,
                       projection_seed=options.projection_seed, tinylora_dropout=options.tinylora_dropout,
                       fan_in_fan_out=TUNER.conv1d_targets(spec, options), **TUNER.peft_kwargs(spec, options))


def apply(model, spec, options):
    from peft import get_peft_model

    return get_peft_model(model, make_config(spec, options))


METHOD = Method(
    name="tinylora", title="TinyLoRA", where="linear weights (their top singular directions, mixed by a tiny "
                                             "trained vector)",
    explanation="Freezes each chosen weight's strongest directions (from its SVD) and trains only how they mix: "
                "the small r×r mixing matrix is a weighted sum of fixed random matrices, and only the weights (a "
                "vector of u numbers, which layers may share) train. A whole model can be adapted with a few "
                "dozen numbers.",
    when_to_use="To see how far a handful of trained numbers goes; the paper's results are for reinforcement "
                "learning on reasoning, and it finds supervised fine-tuning (what this app runs) needs far larger "
                "updates.",
    default_lr=1e-3, options_type=TinyLoraOptions, mergeable=True,
    merge_reason="B·R·A has the shape of W, so it folds into W: zero inference overhead.",
    uses_peft=True, terms=terms, frozen_terms=frozen_terms, adaptation=adaptation, apply=apply,
    validate=make_config, conv1d_layer=TUNER.conv1d, peft_type="TINYLORA", artifact="TinyLoRA adapter",
    in_default_race=False,
    literature=("Morris et al. 2026 (Learning to Reason in 13 Parameters, abstract) claim to train Qwen2.5-8B to "
                "91% accuracy on GSM8K with 13 trained parameters, to recover 90% of the improvement with 1000x "
                "fewer parameters on harder reasoning benchmarks, and that this needs reinforcement learning: SFT "
                "needs 100-1000x larger updates.",))
