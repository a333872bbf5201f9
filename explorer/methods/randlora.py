"""RandLoRA (Albert et al. 2025, "RandLoRA: Full-rank parameter-efficient fine-tuning of large models"), built by
PEFT (``peft.tuners.randlora``).

Like VeRA, one pair of random bases is drawn once from projection_prng_key and shared, frozen, by every adapted
layer; unlike VeRA, each layer sums enough of them to reach full rank. With m = min(in, out) of a layer and
n = ⌈m / r⌉ bases of rank r, ΔW = (alpha/r)·Σᵢ Bᵢ·Λᵢ·A·Γᵢ: the trained Λ (r × n) and Γ (n × m) scale the shared
bases (``RandLoraLayer.update_layer``). So n·(r + m) trainable parameters per adapted layer: a smaller r means more
bases, hence more parameters (the opposite of LoRA's r).

The shared bases are buffers sized by the largest in and out features among the targets (``RandLoraModel._find_dim``
gives (O, I), the largest of each): A of r × 1 × min(O, I) and B of max(O, I) × N × r, N = ⌈min(O, I) / r⌉. PEFT
saves them in the adapter (``save_projection=True``), so they are shown apart, as frozen.

FLOPs, as ``peft.tuners.randlora.layer.Linear.forward`` runs them: ΔW is never formed; x goes through the n·r-wide
bases, F.linear(F.linear(x, ·), ·): 2·in·n·r + 2·n·r·out per token, one of the two operands built from the trained
scalings (the one on the narrower side). That is at least as much as the frozen layer itself (n·r ≥ m), so unmerged
RandLoRA doubles a layer's cost. Building the scaled basis is element-wise, but its custom backward
(``UniqueBaseGrad``) takes two einsums of 2·r·n·m each, once per forward. Merged: no overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .base import Adaptation, Method, Term
from .saved_tensors import dropout_per_token, inputs_with_grad
from .tuners import Tuner, exclude_option, grouped_terms, modules_option, peft_config, preset_option

TUNER = Tuner("randlora", "RandLoRA", conv1d=True)


@dataclass
class RandLoraOptions:
    r: int = option(32, "Rank of each shared random basis (PEFT's RandLoraConfig.r): a layer sums ⌈min(in, out)/r⌉ "
                    "of them to reach full rank, so a smaller r trains more parameters.", min=1, max=65536)
    randlora_alpha: int = option(640, "Scaling numerator: ΔW is multiplied by randlora_alpha/r (PEFT advises 20 "
                                 "times r; lower it if training is unstable).", min=1, max=10**6)
    randlora_dropout: float = option(0.0, "Dropout on the RandLoRA path's input during training.", min=0.0, max=0.9)
    projection_prng_key: int = option(0, "Seed of the shared random bases.", min=0, max=2**31 - 1)
    sparse: bool = option(False, "Ternary sparse bases (entries -1, 0, 1; two thirds zero), as in the paper; the "
                          "same counts and FLOPs here (PEFT does not exploit the zeros).")
    very_sparse: bool = option(False, "Sparser ternary bases (about 1 - 2/√min(O, I) zeros); may cost accuracy.")
    target_preset: str = preset_option("RandLoRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def bases(width: int, r: int) -> int:
    """⌈width / r⌉: how many rank-r bases reach full rank on a side of this width (PEFT's num_bases)."""
    return -(-width // r)


def per_module(m, options):
    r, small = options.r, min(m.in_features, m.out_features)
    n = bases(small, r)
    return n * (r + small), f"{n} bases·({r} (Λ) + {small} (Γ))"


def terms(spec, options) -> list[Term]:
    return grouped_terms(spec, TUNER.targets(spec, options), lambda m: per_module(m, options))


def shared_shape(spec, options) -> tuple[int, int]:
    """(largest out, largest in) features among the targets, as PEFT's _find_dim takes them."""
    modules = [spec.arch.by_name[n] for n in TUNER.targets(spec, options)]
    return max(m.out_features for m in modules), max(m.in_features for m in modules)


def frozen_terms(spec, options) -> list[Term]:
    widest, r = shared_shape(spec, options), options.r
    large, small = max(widest), min(widest)
    n = bases(small, r)
    return [Term("shared basis A (random, frozen)", r * small, f"{r}·{small} = {r * small:,}"),
            Term("shared bases B (random, frozen)", large * n * r, f"{large}·{n}·{r} = {large * n * r:,}")]


def products(m, r: int) -> tuple:
    fan_in, fan_out = m.in_features, m.out_features
    small = min(fan_in, fan_out)
    width = bases(small, r) * r
    first, second = 2 * fan_in * width, 2 * width * fan_out
    # UniqueBaseGrad's backward, once per forward: Λ's gradient sums over the m features, Γ's over the r ranks, each
    # 2·r·n·m; torch runs a sum over an axis of length 1 as an element-wise product, which its counter skips
    einsum = 2 * r * bases(small, r) * small
    scalings = einsum * ((small > 1) + (r > 1))
    if fan_in <= fan_out:  # the first operand carries the trained scalings; the second is a slice of B
        through = (Product(first, first, first), Product(second, second, 0))
    else:  # the first is a slice of B (frozen, its input x); the second carries the scalings
        through = (Product(first, 0, first), Product(second, second, second))
    return (*through, Product(0, scalings, 0, per_token=False))


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond explorer.costs.memory's generic count (every adapted
    layer's input), as ``peft.tuners.randlora.layer.Linear.forward`` runs (randlora_dropout > 0:
    saved_tensors.dropout_per_token, Λ·A·Γ reading the dropped copy where out ≥ in):
    - the scaled basis Λ·A·Γ (``get_scaled_bases``: UniqueBaseGrad's output, r·n × min(in, out), n = ⌈min/r⌉), a new
      tensor every forward, multiplies the input (or the input through B) and is kept for its gradient where the
      layer's input needs one (explorer.methods.saved_tensors);
    - where out < in, the input first goes through a slice of the frozen bases B (a view of PEFT's buffer: only the
      buffer is read back), so the layer's own input is not kept, but the r·n-wide product that Λ·A·Γ reads is (for
      Λ's and Γ's gradients); layers that read the same input as a layer that keeps it (k and v beside q) still
      share it."""
    from ..costs.memory import distinct_inputs

    arch = spec.arch
    names = TUNER.targets(spec, options)
    width = {n: bases(min(arch.by_name[n].in_features, arch.by_name[n].out_features), options.r) * options.r
             for n in names}
    step = sum(width[n] * min(arch.by_name[n].in_features, arch.by_name[n].out_features)
               for n in inputs_with_grad(arch, names))
    narrowing = [n for n in names if arch.by_name[n].out_features < arch.by_name[n].in_features]
    widening = [n for n in names if n not in narrowing]
    token = (sum(width[n] for n in narrowing)
             - (distinct_inputs(arch, names) - distinct_inputs(arch, widening)))  # inputs only a frozen B reads
    if options.randlora_dropout > 0:
        token += dropout_per_token(arch, names, widening)
    return step, token


def adaptation(spec, options) -> Adaptation:
    arch = spec.arch
    step, token = saved(spec, options)
    return Adaptation(products={n: products(arch.by_name[n], options.r) for n in TUNER.targets(spec, options)},
                      vera_shared=sum(t.count for t in frozen_terms(spec, options)), saved_per_step=step,
                      saved_per_token=token)


def make_config(spec, options):
    from peft import RandLoraConfig

    return peft_config(RandLoraConfig, r=options.r, randlora_alpha=options.randlora_alpha,
                       randlora_dropout=options.randlora_dropout, projection_prng_key=options.projection_prng_key,
                       sparse=options.sparse, very_sparse=options.very_sparse,
                       fan_in_fan_out=TUNER.conv1d_targets(spec, options), **TUNER.peft_kwargs(spec, options))


def apply(model, spec, options):
    from peft import get_peft_model

    return get_peft_model(model, make_config(spec, options))


METHOD = Method(
    name="randlora", title="RandLoRA", where="linear weights (shared frozen random bases, trained scalings, full rank)",
    explanation="Every adapted layer uses the same frozen random low-rank bases; it sums enough of them to reach "
                "full rank and trains only the small diagonal scalings of each. A full-rank update with a "
                "LoRA-like parameter count; smaller r means more bases and more parameters.",
    when_to_use="Where LoRA's low rank seems to limit quality (the paper's claim: the gap to full fine-tuning is "
                "often about rank, not parameter count); unmerged it costs about one more layer per adapted layer.",
    default_lr=1e-3, options_type=RandLoraOptions, mergeable=True,
    merge_reason="The sum of scaled bases has the shape of W, so it folds into W; after merging the shared bases "
                 "are no longer needed.",
    uses_peft=True, terms=terms, frozen_terms=frozen_terms, adaptation=adaptation, apply=apply,
    validate=make_config, peft_type="RANDLORA", artifact="RandLoRA adapter", in_default_race=False,
    literature=("Albert et al. 2025 (RandLoRA, abstract) claim that full-rank updates help across vision and "
                "language tasks, and even more for vision-language tasks, where RandLoRA significantly reduces, and "
                "sometimes eliminates, the gap between LoRA and standard fine-tuning.",))
