"""OSF, orthogonal subspace fine-tuning (Nayak et al. 2025, "Sculpting Subspaces: Constrained Full Fine-Tuning in
LLMs for Continual Learning"), built by PEFT (``peft.tuners.osf``).

Each adapted weight is split by its SVD, W = U·S·Vᵀ: the top effective_rank singular directions (the "high"
subspace, what earlier training put there) stay frozen, and the remaining r = min(in, out) − effective_rank
directions train: U_low (out × r), S_low (r) and V_low (r × in), so r·(out + 1 + in) parameters per layer
(``OSFLayer.update_layer``). Their gradients are projected away from the frozen subspace by hooks, so the update
never moves what the top directions hold. PEFT's default keeps half of each layer's directions frozen: OSF is
a constrained full fine-tune, about as many trained numbers as the weights themselves, not a small adapter.

FLOPs, as ``peft.tuners.osf.layer.Linear.forward`` runs them: the update U_low·S_low·V_low − (its frozen start) is
applied as one rank-2r product, F.linear(F.linear(x, [V_low; V_low_init]), [U_low·S_low, −U_low_init·S_low_init]):
2·in·2r + 2·2r·out per token beside the frozen product, both factors with gradients. Each backward adds the
hooks' projections, once per step: U_low's gradient (out × r) projected by two products with U_low_init (out × r),
or with the stored U_high (out × effective_rank) where U is not square (out > in); V_low's likewise. PEFT also
keeps the SVD's frozen starts (and U_high or V_high) as buffers it does not save: memory, not trained nor saved.
Merged, the update folds into W (one way: PEFT's OSF cannot unmerge).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .base import Adaptation
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("osf", "OSF")


@dataclass
class OSFOptions:
    effective_rank: float = option(0.5, "Singular directions kept frozen per layer (PEFT's OSFConfig."
                                   "effective_rank): up to 1, a fraction of the layer's smaller dimension (0.5, "
                                   "PEFT's default: half); above 1, a number of directions. The rest train.",
                                   min=0.0, max=1e6)
    target_preset: str = preset_option("OSF")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def kept(m, options) -> int:
    """PEFT's ``OSFModel._create_and_replace._resolve_rank``: the frozen directions of one layer."""
    smaller, value = min(m.in_features, m.out_features), options.effective_rank
    return min(smaller, int(smaller * value) if value <= 1 else int(value))


def trained_rank(m, options) -> int:
    return min(m.in_features, m.out_features) - kept(m, options)


def check(m, options):
    value = options.effective_rank
    if value > 1 and value != int(value):
        raise ExplorerError(f"OSF: effective_rank above 1 counts directions, so it is a whole number; got {value}.")
    if trained_rank(m, options) <= 0:
        raise ExplorerError(f"OSF: effective_rank {value:g} keeps all {min(m.in_features, m.out_features)} directions "
                            f"of {m.name} frozen, so nothing would train; lower it below 1 (a fraction) or the "
                            "layer's size.")
    if kept(m, options) <= 0:
        raise ExplorerError(f"PEFT: `effective_rank` should be a positive integer value: {value} of {m.name}'s "
                            f"{min(m.in_features, m.out_features)} directions rounds down to none.")


def per_module(m, options):
    r, smaller = trained_rank(m, options), min(m.in_features, m.out_features)
    return r * (m.out_features + 1 + m.in_features), f"({smaller}−{kept(m, options)})·({m.out_features}+1+{m.in_features})"


def products(m, options):
    n, out, r, k = m.in_features, m.out_features, trained_rank(m, options), kept(m, options)
    down, up = 2 * n * 2 * r, 2 * 2 * r * out  # rank 2r: the trained factors beside their frozen starts
    # the gradient hooks, once per backward: two products each, with the low start (square factor) or the high part
    hook_u = 4 * out * r * (k if out > n else r)
    hook_v = 4 * n * r * (k if out < n else r)
    return Product(down, down, down), Product(up, 2 * up, 0), Product(0, hook_u + hook_v, 0, per_token=False)


def buffers(m, options) -> int:
    """The frozen buffers PEFT keeps per layer (not saved: rebuilt from the base's SVD when a run reloads)."""
    n, out, r, k = m.in_features, m.out_features, trained_rank(m, options), kept(m, options)
    return out * r + r + r * n + (out * k if out > n else 0) + (k * n if out < n else 0)


def make_config(spec, options):
    from peft import OSFConfig

    value = options.effective_rank
    return peft_config(OSFConfig, effective_rank=value if value <= 1 else int(value), **TUNER.peft_kwargs(spec, options))


PRODUCTS_ONLY = linear_method(
    TUNER, per_module, products, make_config, check,
    name="osf", title="OSF", where="linear weights (their low singular directions; the top ones stay frozen)",
    explanation="Splits each chosen weight by its singular value decomposition, freezes the top directions (what "
                "the model learned most strongly) and trains the rest, with every update kept orthogonal to the "
                "frozen part. A constrained full fine-tune, built for learning new tasks one after another.",
    when_to_use="Continual learning, where a new task must not overwrite what earlier ones taught; it trains "
                "about as many numbers as the weights it adapts, so it is not a small adapter.",
    default_lr=1e-4, options_type=OSFOptions, mergeable=True,
    merge_reason="The update has the shape of W, so it folds into W: zero inference overhead (PEFT's OSF merges "
                 "one way: it cannot unmerge).",
    peft_type="OSF", artifact="OSF adapter", in_default_race=False, unmerges=False,
    literature=("Nayak et al. 2025 (Sculpting Subspaces, abstract) claim state-of-the-art results on standard "
                "continual learning benchmarks (T5-Large, LLaMA-2 7B), up to 7% higher average accuracy than recent "
                "baselines such as O-LoRA, while keeping general linguistic capabilities, instruction following "
                "and safety, with no additional parameters per task.",))


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond the layers' inputs, as ``peft.tuners.osf.layer.Linear.
    forward`` runs: A = [U_low·S_low, −U_low_init·S_low_init] (out × 2r) and B = [V_low; V_low_init] (2r × in) are
    new tensors every forward (torch.cat); F.linear(x, B) keeps B for x's gradient where x needs one
    (explorer.methods.saved_tensors), F.linear(h, A) keeps A (h = x·Bᵀ always needs one: V_low trains) and h,
    2r per token, for A's gradient."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    rank2 = {n: 2 * trained_rank(arch.by_name[n], options) for n in names}
    step = sum(arch.by_name[n].out_features * rank2[n] for n in names)
    step += sum(rank2[n] * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))
    return step, sum(rank2.values())


def adaptation(spec, options) -> Adaptation:
    """The products, PEFT's frozen SVD buffers as memory (float32, as VeRA's shared matrices are counted), and what
    its forward keeps for backward (saved)."""
    held = sum(buffers(spec.arch.by_name[n], options) for n in TUNER.targets(spec, options))
    step, token = saved(spec, options)
    return dataclasses.replace(PRODUCTS_ONLY.adaptation(spec, options), vera_shared=held, saved_per_step=step,
                               saved_per_token=token)


METHOD = dataclasses.replace(PRODUCTS_ONLY, adaptation=adaptation)
