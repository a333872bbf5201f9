"""Lily (Zhong, Zhao & Zhou 2025, "Low-Rank Interconnected Adaptation across Layers"), built by PEFT
(``peft.tuners.lily``).

LoRA's A and B shared across layers and mixed by a router. Per kind of adapted layer (its name in the block and its
shape: every q_proj alike), consecutive runs of stride_A layers share one A (r × in), and all of them share one
bank of num_B B matrices (num_B·r × out); each layer has its own router (num_B × r)
(``LilyModel._post_injection_hook``). So per kind with n layers: ⌈n / stride_A⌉·r·in + num_B·r·out + n·r·num_B
trained. The router weighs the B's by the softmax of router(A·x), averaged over every token of the batch, into one
B (r × out); ΔW·x = scaling·B_mix·(A·x).

FLOPs, as ``peft.tuners.lily.layer.Linear.forward`` runs them, per token: A (2·in·r; its gradient, and x's where x
needs one), the router (2·r·num_B, both gradients) and the mixed B (2·r·out, both gradients); once per forward,
the einsum that mixes the bank ((1 × num_B)·(num_B × r·out), both gradients). Lily does not merge (PEFT raises
NotImplementedError): its update depends on the batch through the router.

PEFT groups layers by the target_modules entry a name ends with, so the entries given to PEFT here are the
targets' names in the block (self_attn.q_proj, ...), with the other layers those names would match excluded: a
list of full names would make every layer its own kind and share nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from . import targets as peft_targets
from .base import Adaptation, Method, Term
from .tuners import Tuner, exclude_option, modules_option, peft_config, preset_option

TUNER = Tuner("lily", "Lily")


@dataclass
class LilyOptions:
    r: int = option(32, "Lily's rank (PEFT's LilyConfig.r): the width of every A and B; PEFT advises 2-4 times "
                    "the LoRA rank, since A and B are shared.", min=1, max=4096)
    stride_A: int = option(1, "Consecutive layers of a kind (e.g. every q_proj) that share one A: 1 = one A per "
                           "layer; PEFT suggests 2-4.", min=1, max=1024)
    num_B: int = option(2, "B matrices shared by all layers of a kind, mixed by each layer's router (at least 2, "
                        "so the router trains).", min=2, max=1024)
    scaling: float = option(1.0, "Multiplier of the update (no alpha/r here): a hyperparameter to sweep on a log "
                            "scale.", min=0.0, max=1e4)
    target_preset: str = preset_option("Lily")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def kinds(spec, options) -> list[tuple[str, list[str]]]:
    """The targets grouped as PEFT's _post_injection_hook groups them: (name in the block, shape) -> its layers, in
    model order."""
    arch, out = spec.arch, {}
    for name in TUNER.targets(spec, options):
        m = arch.by_name[name]
        out.setdefault((arch.locate(name)[1], m.in_features, m.out_features), []).append(name)
    suffixes = sorted({local for local, _, _ in out})
    for local in suffixes:  # PEFT keeps the last entry a name ends with: entries that overlap would regroup layers
        other = next((s for s in suffixes if s != local and local.endswith(s)), None)
        if other:
            raise ExplorerError(f"Lily groups layers by the target name they end with, and {local} also ends with "
                                f"{other}: target one of them.")
    return [(local, names) for (local, _, _), names in out.items()]


def terms(spec, options) -> list[Term]:
    arch, o = spec.arch, options
    out = []
    for local, names in kinds(spec, options):
        m, n = arch.by_name[names[0]], len(names)
        a_count = -(-n // o.stride_A)
        count = a_count * o.r * m.in_features + o.num_B * o.r * m.out_features + n * o.r * o.num_B
        layers = peft_targets.layer_span([arch.locate(x)[0] for x in names if arch.locate(x)[0] is not None])
        out.append(Term(local, count, f"{a_count} A·{o.r}·{m.in_features} + {o.num_B} B·{o.r}·{m.out_features} + "
                                      f"{n} routers·{o.r}·{o.num_B} ({layers}) = {count:,}"))
    return out


def products(m, o) -> tuple:
    down, route, up = 2 * m.in_features * o.r, 2 * o.r * o.num_B, 2 * o.r * m.out_features
    mix = 2 * o.num_B * o.r * m.out_features  # the bank's weighted sum, once per forward
    return (Product(down, down, down), Product(route, 2 * route, 0), Product(up, 2 * up, 0),
            Product(mix, 2 * mix, 0, per_token=False))


def adaptation(spec, options) -> Adaptation:
    """The products, and what ``peft.tuners.lily.layer.LilyLayer.forward`` keeps for backward beyond every adapted
    layer's input: per token the hidden x·Aᵀ (r, kept by the router and by the product with the mixed B) and the
    router's softmax (num_B); per forward the mixed B = Σ p_e·B_e (r × out, a new tensor kept by that product for
    the hidden's gradient) and the mean router probabilities (num_B, kept by the mix)."""
    arch, o = spec.arch, options
    names = TUNER.targets(spec, options)
    return Adaptation(products={n: products(arch.by_name[n], o) for n in names},
                      saved_per_token=len(names) * (o.r + o.num_B),
                      saved_per_step=sum(o.r * arch.by_name[n].out_features + o.num_B for n in names))


def make_config(spec, options):
    from peft import LilyConfig

    arch = spec.arch
    grouped = kinds(spec, options)
    chosen = {n for _, names in grouped for n in names}
    entries = sorted({local for local, _ in grouped})
    matched = peft_targets.match(arch, "lily", entries).targets
    others = [n for n in matched if n not in chosen]
    return peft_config(LilyConfig, r=options.r, stride_A=options.stride_A, num_B=options.num_B,
                       scaling=options.scaling, target_modules=entries, exclude_modules=others or None)


def apply(model, spec, options):
    from peft import get_peft_model

    return get_peft_model(model, make_config(spec, options))


METHOD = Method(
    name="lily", title="Lily", where="linear weights (LoRA factors shared across layers, mixed by routers)",
    explanation="LoRA whose A and B are not per layer: neighbouring layers of a kind share an A, all of them share "
                "a few B's, and a small router in each layer picks how to mix the B's for the batch it sees. The "
                "saved parameters buy a higher rank.",
    when_to_use="Where LoRA's rank seems to limit quality at a given parameter count; it cannot be merged, so "
                "inference keeps its extra products.",
    default_lr=1e-3, options_type=LilyOptions, mergeable=False,
    merge_reason="Cannot merge: the router mixes the B's from the batch's own tokens, so the update is not one "
                 "fixed matrix (PEFT's Lily raises NotImplementedError on merge).",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply, validate=make_config,
    conv1d_layer=TUNER.conv1d, peft_type="LILY", artifact="Lily adapter", in_default_race=False,
    literature=("Zhong et al. 2025 (Lily, abstract) claim that sharing A locally and B globally, with "
                "data-dependent routers, gives a higher-rank update with equal or fewer parameters, and superior "
                "performance and efficiency across modalities, architectures and model sizes.",))
