"""Super-Tuning (arXiv:2607.09287), built by PEFT (``peft.tuners.supertuning``).

A fixed sparse set of each adapted weight's own entries trains; the rest stays frozen. The set is chosen once, data-
free, by magnitude: the int(in·out·(1 − sparsity)) entries of largest |W| (select_top; the smallest with
select_top=false), ``SupertuningLayer.update_layer``'s torch.topk. With r set (the paper's "Supra" hybrid) a LoRA of
rank r is added beside it: r·(in + out) more trained parameters, scaled by lora_alpha/r. The chosen positions are
kept as an int32 buffer of the same length, saved with the adapter (save_precomputed_indices; false: recomputed from
the base weights when a run reloads): shown as not trained.

FLOPs, as ``peft.tuners.supertuning.layer.Linear.forward`` runs them: each forward scatter-adds the trained entries
into a copy of W (element-wise work, not counted by torch's counter nor here) and runs F.linear with that weight in
place of the frozen layer: per token the same 2·in·out forward, plus the new weight's gradient (2·in·out) in
backward, from which the trained entries take theirs (as SHiRA's). Supra adds LoRA's two products. Merged, the
entries (and the LoRA) are added into W: no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("supertuning", "Super-Tuning")


@dataclass
class SupertuningOptions:
    sparsity: float = option(0.99, "PEFT's SupertuningConfig.sparsity: the share of each weight that stays frozen; "
                             "0.99 trains 1% of its entries (those of largest magnitude).", min=0.0, max=0.999999)
    select_top: bool = option(True, "PEFT's select_top: train the entries of largest magnitude (the paper's Super); "
                              "false trains the smallest (its '-bottom' variants).")
    r: int = option(0, "PEFT's r: the rank of a LoRA added beside the sparse entries (the paper's Supra hybrid); 0 "
                    "adds none (PEFT's None).", min=0, max=65536)
    lora_alpha: float = option(0.0, "PEFT's lora_alpha for the Supra LoRA (scale alpha/r); 0 = PEFT's default 2·r. "
                               "Used only with r.", min=0.0, max=1e6)
    lora_dropout: float = option(0.0, "PEFT's lora_dropout on the Supra LoRA's input. Used only with r.",
                                 min=0.0, max=0.99)
    init_weights: bool = option(True, "PEFT's init_weights: the entries (and the LoRA's B) start at zero, so "
                                "training starts from the base model; false starts them random.")
    save_precomputed_indices: bool = option(True, "PEFT's save_precomputed_indices: save the chosen positions with "
                                            "the adapter (int32); false recomputes them from the base weights on "
                                            "reload (a smaller file; ties may then break differently).")
    target_preset: str = preset_option("Super-Tuning")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def entries(m, options) -> int:
    """PEFT's own arithmetic (``SupertuningLayer._num_trainable``), floating point included."""
    return int(m.in_features * m.out_features * (1 - options.sparsity))


def validate(spec, options):
    """PEFT's per-layer refusal (in ``update_layer``, mid-build) before anything is built, on the smallest target, so
    that the advice suits every target."""
    make_config(spec, options)  # PEFT's own checks of the config
    m = min((spec.arch.by_name[n] for n in TUNER.targets(spec, options)), key=lambda m: m.in_features * m.out_features)
    if entries(m, options) < 1:
        raise ExplorerError(f"PEFT: sparsity {options.sparsity} leaves no trainable entry of {m.name}'s "
                            f"{m.in_features}·{m.out_features} weights; use a sparsity below "
                            f"1 − 1/{m.in_features * m.out_features:,}.")


def per_module(m, options):
    keep = round(1 - options.sparsity, 6)
    count, expression = entries(m, options), f"⌊{m.in_features}·{m.out_features}·{keep:g}⌋"
    if options.r:
        count += options.r * (m.in_features + m.out_features)
        expression += f" + {options.r}·({m.in_features}+{m.out_features})"
    return count, expression


def frozen(m, options):
    """The chosen positions (an int32 buffer), saved with the adapter unless save_precomputed_indices is false."""
    return entries(m, options), f"⌊{m.in_features}·{m.out_features}·{round(1 - options.sparsity, 6):g}⌋ positions"


def products(m, options):
    n, out, r = m.in_features, m.out_features, options.r
    dense = (Product(0, 2 * n * out, 0),)  # F.linear(x, W + ΔW) replaces the frozen product; its weight trains
    if not r:
        return dense
    return dense + (Product(2 * n * r, 2 * n * r, 2 * n * r), Product(2 * r * out, 2 * 2 * r * out, 0))


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond explorer.costs.memory's generic count (every adapted
    layer's input), as ``peft.tuners.supertuning.layer.Linear.forward`` runs:
    - W + ΔW (``dense_plus_sparse``, W's entries scatter-added with the trained values, out×in, a new tensor every
      forward), which F.linear keeps for its input's gradient where that input needs one
      (explorer.methods.saved_tensors);
    - the positions cast to int64 (``indices.to(torch.int64)``, a new tensor: the buffer is int32), which
      scatter_add keeps for the values' gradient: 8 bytes per trained entry, counted as 2 elements (exact at
      float32 activations);
    - with the Supra LoRA (r > 0), per token A's r-wide output, kept for B's gradient, and with lora_dropout each
      layer's dropped-out copy of its input (kept for A's gradient) and, where that input needs a gradient, the
      dropout's mask, at the input's width as torch's unfused dropout keeps it on CPU (CUDA's fused one keeps a
      byte per element: there this over-counts)."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    step = sum(arch.by_name[n].out_features * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))
    step += sum(2 * entries(arch.by_name[n], options) for n in names)
    token = 0
    if options.r:
        token = options.r * len(names)
        if options.lora_dropout > 0:
            token += sum(arch.by_name[n].in_features for n in [*names, *inputs_with_grad(arch, names)])
    return step, token


def make_config(spec, options):
    from peft import SupertuningConfig

    return peft_config(SupertuningConfig, sparsity=options.sparsity, select_top=options.select_top,
                       r=options.r or None, lora_alpha=options.lora_alpha or None, lora_dropout=options.lora_dropout,
                       init_weights=options.init_weights, save_precomputed_indices=options.save_precomputed_indices,
                       **TUNER.peft_kwargs(spec, options))


WITH_POSITIONS = linear_method(
    TUNER, per_module, products, make_config, frozen=frozen,
    name="supertuning", title="Super-Tuning", where="linear weights (their largest entries, chosen by magnitude)",
    explanation="Trains a small fixed set of each chosen layer's own weights, the ones of largest magnitude (1% by "
                "default), and freezes the rest: a sparse update chosen without looking at any data. Optionally a "
                "LoRA beside it (the paper's Supra).",
    when_to_use="When a sparse update is wanted without a calibration pass; the trained entries are written into "
                "the weights when merged.",
    default_lr=1e-3, options_type=SupertuningOptions, mergeable=True,
    merge_reason="The sparse ΔW (and the Supra LoRA) has the shape of W, so it is added into W: zero inference "
                 "overhead.",
    peft_type="SUPERTUNING", artifact="Super-Tuning adapter", in_default_race=False,
    literature=("The Super-Tuning paper (2026, arXiv:2607.09287, abstract) claims that magnitude-based Super-Tuning "
                "matches or exceeds LoRA at comparable parameter budgets on Llama-3.2-1B and Meta-Llama-3-8B "
                "fine-tunes evaluated on Math17K; its 8B ablation (as PEFT's documentation reports it) averages "
                "79.02% with magnitude top-k against 78.66% with Wanda-style selection, which needs a calibration "
                "pass.",))


def frozen_terms(spec, options):
    return WITH_POSITIONS.frozen_terms(spec, options) if options.save_precomputed_indices else []


def adaptation(spec, options):
    step, token = saved(spec, options)
    return dataclasses.replace(WITH_POSITIONS.adaptation(spec, options), saved_per_step=step, saved_per_token=token)


METHOD = dataclasses.replace(WITH_POSITIONS, frozen_terms=frozen_terms, validate=validate, adaptation=adaptation)
