"""VeRA (Kopiczko, Blankevoort & Asano 2024, "VeRA: Vector-based Random Matrix Adaptation"), built by PEFT.

One pair of random matrices, A (r × max in) and B (max out × r), is drawn once from a seed and shared by every
adapted layer, frozen; each layer slices what it needs and trains two vectors only:
ΔW·x = λ_b ⊙ (B_slice·(λ_d ⊙ (A_slice·x))), λ_d ∈ ℝ^r, λ_b ∈ ℝ^out. So out + r trainable parameters per
adapted layer (the paper's |Θ| = L·(d_model + r) for square layers). PEFT keeps A and B as buffers sized by
the largest in/out features among the targets (``VeraModel._find_dim``) and saves them in the adapter file
(``save_projection=True``), so they are shown apart, as frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from . import targets as peft_targets
from .base import Adaptation, Method, Term
from .lora import PRESETS, target_spec


@dataclass
class VeraOptions:
    r: int = option(256, "Rank of the shared random matrices (PEFT's VeraConfig.r): more rank costs only r "
                    "trainable entries per layer.", min=1, max=4096)
    target_preset: str = option("all-linear", "Which linear layers get a VeRA update: q and v, all attention "
                                "projections, every linear layer of the block, or a custom list.", choices=PRESETS)
    target_modules: str = option("", "Custom comma-separated linear layer names (used when the preset is custom).")
    vera_dropout: float = option(0.0, "Dropout on the VeRA path's input during training.", min=0.0, max=0.9)
    d_initial: float = option(0.1, "Initial value of every λ_d entry (λ_b starts at zero, so training starts "
                              "from the base model).", min=0.0, max=10.0)
    projection_prng_key: int = option(0, "Seed of the shared random matrices.", min=0, max=2**31 - 1)


def targets(spec, options) -> list[str]:
    """The full names of the linear (and Conv1D) modules VeRA adapts, matched as PEFT matches them."""
    arch = spec.arch
    names = list(peft_targets.match(arch, "vera", target_spec(arch, options)).targets)
    if arch.head and arch.head in names:
        raise ExplorerError(f"VeRA here adapts the blocks' linear layers; remove {arch.head} from target_modules.")
    return names


def shared_shape(spec, options) -> tuple[int, int]:
    """(largest in, largest out) features among the targets: the sizes of the shared A and B."""
    modules = [spec.arch.by_name[name] for name in targets(spec, options)]
    return max(m.in_features for m in modules), max(m.out_features for m in modules)


def terms(spec, options) -> list[Term]:
    arch, r = spec.arch, options.r
    out = []
    for local, layers, example in peft_targets.group(arch, targets(spec, options)):
        per = arch.by_name[example].out_features + r
        n = max(len(layers), 1)
        where = f" × {n} {peft_targets.layer_span(layers)}" if layers else ""
        out.append(Term(local, per * n, f"{per - r} (λ_b) + {r} (λ_d){where} = {per * n:,}"))
    return out


def frozen_terms(spec, options) -> list[Term]:
    widest_in, widest_out = shared_shape(spec, options)
    r = options.r
    return [Term("shared A (random, frozen)", r * widest_in, f"{r}·{widest_in} = {r * widest_in:,}"),
            Term("shared B (random, frozen)", widest_out * r, f"{widest_out}·{r} = {widest_out * r:,}")]


def adaptation(spec, options) -> Adaptation:
    return Adaptation(vera={name: options.r for name in targets(spec, options)},
                      vera_shared=sum(t.count for t in frozen_terms(spec, options)))


def apply(model, spec, options):
    from peft import VeraConfig, get_peft_model

    return get_peft_model(model, VeraConfig(
        task_type="CAUSAL_LM", r=options.r, target_modules=targets(spec, options), vera_dropout=options.vera_dropout,
        d_initial=options.d_initial, projection_prng_key=options.projection_prng_key,
        # GPT-2's Conv1D stores W transposed
        fan_in_fan_out=any(spec.arch.by_name[n].kind == "conv1d" for n in targets(spec, options))))


METHOD = Method(
    name="vera", title="VeRA", where="linear weights (shared frozen random matrices, trained scaling vectors)",
    explanation="Every adapted layer uses the same pair of random low-rank matrices A and B, frozen; it trains "
                "only two vectors that scale A's output (λ_d, r entries) and B's output (λ_b, one per output "
                "feature). Far fewer trainable parameters than LoRA at any rank.",
    when_to_use="When many adapters must be stored or served per user: each is a few vectors plus a seed.",
    default_lr=1e-2, options_type=VeraOptions, mergeable=True,
    merge_reason="ΔW = diag(λ_b)·B·diag(λ_d)·A has the shape of W, so it folds into each weight; after merging "
                 "the shared random matrices are no longer needed.",
    uses_peft=True, terms=terms, frozen_terms=frozen_terms, adaptation=adaptation, apply=apply,
    validate=lambda spec, options: targets(spec, options), peft_type="VERA", artifact="VeRA adapter",
    in_default_race=False,
    literature=("Kopiczko et al. 2024 (VeRA, abstract) claim 10x fewer trainable parameters than LoRA with the "
                "same performance on GLUE and E2E, and instruction tuning of Llama 2 7B with 1.4M parameters.",))
