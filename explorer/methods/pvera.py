"""PVeRA (Fillioux et al. 2025, "PVeRA: Probabilistic Vector-Based Random Matrix Adaptation"), built by PEFT
(``peft.tuners.pvera``).

VeRA made probabilistic: one pair of frozen random matrices, A (2r × largest in) and B (largest out × r), is drawn
once from projection_prng_key and shared by every adapted layer (``PveraModel._init_pvera_A_pvera_B``). Each layer
trains two vectors: λ_d of 2r entries and λ_b of out entries (``PveraLayer.update_layer``), so out + 2r per layer.
λ_d ⊙ (A·x) is split in two halves, a mean μ and a log-variance; training samples z = μ + ε·exp(logvar/2) (the
reparameterisation trick) and adds λ_b ⊙ (B·z); at inference the mean μ is used (PEFT's sample_at_inference=False).
PEFT saves A and B in the adapter (``save_projection=True``), so they are shown apart, as frozen.

FLOPs, as ``peft.tuners.pvera.layer.Linear.forward`` runs them: F.linear(x, A_slice) (2·in·2r per token, A frozen:
x's gradient only where x needs one) and F.linear(z, B_slice) (2·r·out, B frozen; z depends on the trained λ_d,
so its gradient is always paid); the scalings and the sampling are element-wise. Merged (the mean): no overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .base import Adaptation, Method, Term
from .saved_tensors import dropout_per_token
from .tuners import Tuner, exclude_option, grouped_terms, modules_option, peft_config, preset_option

TUNER = Tuner("pvera", "PVeRA", conv1d=True)


@dataclass
class PveraOptions:
    r: int = option(256, "Rank of the shared random matrices (PEFT's PveraConfig.r): A has 2r rows (a mean and a "
                    "log-variance half), B has r columns; more rank costs only 2r trainable entries per layer.",
                    min=1, max=4096)
    pvera_dropout: float = option(0.0, "Dropout on the PVeRA path's input during training.", min=0.0, max=0.9)
    d_initial: float = option(0.1, "Initial value of every λ_d entry (λ_b starts at zero, so training starts from "
                              "the base model); PEFT advises 0.1 or less.", min=0.0, max=10.0)
    projection_prng_key: int = option(0, "Seed of the shared random matrices.", min=0, max=2**31 - 1)
    target_preset: str = preset_option("PVeRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def per_module(m, options):
    r = options.r
    return m.out_features + 2 * r, f"{m.out_features} (λ_b) + 2·{r} (λ_d)"


def terms(spec, options) -> list[Term]:
    return grouped_terms(spec, TUNER.targets(spec, options), lambda m: per_module(m, options))


def shared_shape(spec, options) -> tuple[int, int]:
    """(largest in, largest out) features among the targets: the widths of the shared A and B (PEFT's _find_dim)."""
    modules = [spec.arch.by_name[n] for n in TUNER.targets(spec, options)]
    return max(m.in_features for m in modules), max(m.out_features for m in modules)


def frozen_terms(spec, options) -> list[Term]:
    widest_in, widest_out = shared_shape(spec, options)
    r = options.r
    return [Term("shared A (random, frozen)", 2 * r * widest_in, f"2·{r}·{widest_in} = {2 * r * widest_in:,}"),
            Term("shared B (random, frozen)", widest_out * r, f"{widest_out}·{r} = {widest_out * r:,}")]


def products(m, r: int) -> tuple:
    down, up = 2 * m.in_features * 2 * r, 2 * r * m.out_features
    return Product(down, 0, down), Product(up, up, 0)  # both matrices frozen; what follows λ_d needs its gradient


def saved_per_token(spec, options) -> int:
    """Elements per token autograd keeps beyond explorer.costs.memory's generic count (every adapted layer's input), as
    ``peft.tuners.pvera.layer.Linear.forward`` trains (pvera_dropout > 0: saved_tensors.dropout_per_token, the
    frozen A reading the dropped copy): x·Aᵀ (2r, kept for λ_d's gradient), the sample's std = exp(logvar/2) and its
    noise eps (``_reparametrize``: r each, kept for each other's gradient), and the product with B (out, kept for
    λ_b's gradient); not the layer's input, which only the frozen slice of A reads (only the buffer is read back)."""
    from ..costs.memory import distinct_inputs

    arch = spec.arch
    names = TUNER.targets(spec, options)
    dropout = dropout_per_token(arch, names, []) if options.pvera_dropout > 0 else 0
    return sum(4 * options.r + arch.by_name[n].out_features for n in names) - distinct_inputs(arch, names) + dropout


def adaptation(spec, options) -> Adaptation:
    arch = spec.arch
    return Adaptation(products={n: products(arch.by_name[n], options.r) for n in TUNER.targets(spec, options)},
                      vera_shared=sum(t.count for t in frozen_terms(spec, options)),
                      saved_per_token=saved_per_token(spec, options))


def make_config(spec, options):
    from peft import PveraConfig

    return peft_config(PveraConfig, r=options.r, pvera_dropout=options.pvera_dropout, d_initial=options.d_initial,
                       projection_prng_key=options.projection_prng_key,
                       fan_in_fan_out=TUNER.conv1d_targets(spec, options), **TUNER.peft_kwargs(spec, options))


def apply(model, spec, options):
    from peft import get_peft_model

    return get_peft_model(model, make_config(spec, options))


METHOD = Method(
    name="pvera", title="PVeRA", where="linear weights (shared frozen random matrices, trained scalings of a "
                                       "sampled update)",
    explanation="VeRA made probabilistic: every adapted layer uses the same pair of frozen random matrices and "
                "trains two small vectors, but the first one gives a mean and a spread, and training samples the "
                "update around that mean (so it learns how sure it is). At inference the mean is used.",
    when_to_use="Where VeRA's tiny adapters fit and the inputs are ambiguous; the paper's tests are image "
                "classification, so on language tasks this is an experiment.",
    default_lr=3e-3, options_type=PveraOptions, mergeable=True,
    merge_reason="The mean update diag(λ_b)·B·diag(λ_d,μ)·A_μ has the shape of W, so it folds into W (the sampling "
                 "is dropped: PEFT merges the mean, what inference uses); the shared matrices are then not needed.",
    uses_peft=True, terms=terms, frozen_terms=frozen_terms, adaptation=adaptation, apply=apply,
    validate=make_config, conv1d_layer=TUNER.conv1d, peft_type="PVERA", artifact="PVeRA adapter",
    in_default_race=False,
    literature=("Fillioux et al. 2025 (PVeRA, abstract) claim that on the VTAB-1k benchmark, against seven "
                "adapters, PVeRA outperforms VeRA and the other adapters (image classification; not measured "
                "here).",))
