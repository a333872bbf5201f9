"""SHiRA (Bhardwaj et al. 2024, "Rapid Switching and Multi-Adapter Fusion via Sparse High Rank Adapters"), built by
PEFT (``peft.tuners.shira``).

A fixed sparse set of each adapted weight's own entries trains; every other entry stays frozen. The set is a mask
drawn once (PEFT's ``mask_functions.random_mask``: a random permutation from random_seed, so every layer of a shape
gets the same positions) with as many entries as LoRA would train at rank r: r·(in + out) per adapted linear layer
(``ShiraLayer.update_layer``), which PEFT allows only while that is at most in·out. ΔW is sparse, not low-rank.

FLOPs, as ``peft.tuners.shira.layer.Linear.forward`` runs them: each forward copies W, adds the sparse ΔW (element-
wise work, not counted by torch's counter nor here) and runs F.linear with that new weight instead of the frozen
layer: per token the same 2·in·out forward, plus the new weight's gradient (2·in·out) in backward, from which the
trained entries take theirs. That copy of W is held for backward, like a trained weight's. Merged, ΔW is added
to W: no overhead.

What a meta-device build cannot do: torch has no sparse kernels there and cannot find a mask's nonzero positions
(a data-dependent shape). So the calculator's exact count (built on the meta device) gives PEFT a mask function that
returns no mask, and PEFT creates the same r·(in + out) trained entries without their positions; FLOPs are checked
against torch's counter on a real CPU build (tests/test_peft_tuners_more.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("shira", "SHiRA")


@dataclass
class ShiraOptions:
    r: int = option(8, "Sets how many entries of each weight train: r·(in+out), as many as LoRA at rank r (PEFT's "
                    "ShiraConfig.r; it does not limit the update's rank). PEFT's default is 32; 8 here so that the "
                    "demo model's 32→16 key projection can take it: at most in·out/(in+out).", min=1, max=65536)
    mask_type: str = option("random", "PEFT's mask_type: which entries train. PEFT ships one mask function, a random "
                            "sparse mask; the paper's other masks (weight magnitude, gradient, SNIP) need one "
                            "written in code (config.mask_fn).", choices=("random",))
    random_seed: int = option(0, "Seed of the random mask (PEFT's random_seed).", min=0, max=2**31 - 1)
    target_preset: str = preset_option("SHiRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def largest_r(m) -> int:
    return m.in_features * m.out_features // (m.in_features + m.out_features)


def validate(spec, options):
    """PEFT's per-layer refusal (in ``update_layer``, mid-build) before anything is built, on the target that takes
    the smallest r, so that the r it names suits every target."""
    make_config(spec, options)
    m = min((spec.arch.by_name[n] for n in TUNER.targets(spec, options)), key=largest_r)
    count = options.r * (m.in_features + m.out_features)
    if count > m.in_features * m.out_features:
        raise ExplorerError(f"PEFT: rank {options.r} would train r·(in+out) = {count:,} entries of {m.name}, more "
                            f"than its {m.in_features}·{m.out_features} = {m.in_features * m.out_features:,} weights; "
                            f"use r ≤ {largest_r(m)}.")


def per_module(m, options):
    return options.r * (m.in_features + m.out_features), f"{options.r}·({m.in_features}+{m.out_features})"


def products(m, options):
    dense = 2 * m.in_features * m.out_features  # F.linear(x, W + ΔW) replaces the frozen product; its weight trains
    return (Product(0, dense, 0),)


def make_config(spec, options):
    from peft import ShiraConfig

    return peft_config(ShiraConfig, r=options.r, mask_type=options.mask_type, random_seed=options.random_seed,
                       **TUNER.peft_kwargs(spec, options))


def saved_per_step(spec, options) -> int:
    """What autograd keeps once per forward (``peft.tuners.shira.layer.Linear.forward``), in elements at the
    activations' width: the copy W + ΔW (``get_base_weight().clone()`` plus the sparse ΔW, in the base weight's
    dtype), which F.linear keeps for its input's gradient where that input needs one (explorer.methods.
    saved_tensors); and each layer's sparse ΔW (``get_delta_weight``: ``torch.sparse_coo_tensor``, whose backward
    keeps its result to mask the gradient): r·(in + out) float32 values with two int64 positions each, 20 bytes,
    counted as 5 elements (exact at float32 activations; at 16-bit ones the formula counts 10 of its 20 bytes)."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    copies = sum(arch.by_name[n].in_features * arch.by_name[n].out_features for n in inputs_with_grad(arch, names))
    sparse = sum(per_module(arch.by_name[n], options)[0] for n in names)
    return copies + 5 * sparse


def _no_mask(base_layer, r, **kwargs):
    return None


def apply(model, spec, options):
    from peft import get_peft_model

    config = make_config(spec, options)
    if any(p.device.type == "meta" for p in model.parameters()):
        config.mask_fn = _no_mask  # PEFT's own hook for mask functions; see the module's docstring
    return get_peft_model(model, config)


LINEAR = linear_method(
    TUNER, per_module, products, make_config,
    name="shira", title="SHiRA", where="linear weights (a fixed sparse set of their own entries)",
    explanation="Trains a small, fixed, randomly chosen set of each chosen layer's own weights (as many as LoRA "
                "would train at rank r) and freezes the rest: a sparse update, not a low-rank one.",
    when_to_use="When adapters must be switched quickly on a deployed model: only the few changed entries are "
                "written into the weights.",
    default_lr=1e-3, options_type=ShiraOptions, mergeable=True,
    merge_reason="The sparse ΔW has the shape of W, so it is added into W: zero inference overhead.",
    peft_type="SHIRA", artifact="SHiRA adapter", in_default_race=False,
    meta_forward_refusal="SHiRA's sparse update has no kernel on the meta device (tests/test_peft_tuners_more.py "
                         "counts its FLOPs on a real CPU build)",
    saved_bytes_per_param=12,  # each trained float32 entry is saved with its two int32 positions (shira_indices)
    literature=("Bhardwaj et al. 2024 (SHiRA, abstract) claim that fine-tuning 1-2% of the base model's weights "
                "suffices for many adapter tasks and significantly outperforms LoRA, with no inference overhead and "
                "rapid switching in the fused mode; PEFT's method comparison (issue 27) reports 51.0% on GSM8K "
                "against LoRA r32's 47.8%.",))


def adaptation(spec, options):
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=saved_per_step(spec, options))


METHOD = dataclasses.replace(LINEAR, apply=apply, validate=validate, adaptation=adaptation)
