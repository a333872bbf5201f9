"""RoAd (Liao, Monz et al. 2024, "2D Rotary Adaptation for Efficient Parameter-Efficient Fine-Tuning, Orthogonal
Finetuning and Representation Finetuning"), built by PEFT (``peft.tuners.road``).

Each adapted linear layer's output is rotated, pair of features by pair of features, by a learned 2-D rotation
with a learned scale: within each group of group_size features, feature i and feature i + group_size/2 form a
pair, y' = α·(cos θ·y + sin θ·rot(y)). Trained per layer: θ and α for every pair (road_1: out/2 each, shared by
the two features of a pair, so out in all), for every feature (road_2: 2·out) or twice that (road_4: 4·out).

FLOPs: all elementwise (``peft.tuners.road.layer._apply_road``), so no matmul is added; the frozen product's
output now depends on trained scales, so everything above it pays input gradients, as IA³'s. Merged, the
rotation folds into W's rows: no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("road", "RoAd")
PER_FEATURE = {"road_1": 1, "road_2": 2, "road_4": 4}  # trained entries per output feature (θ and α together)


@dataclass
class RoadOptions:
    variant: str = option("road_1", "PEFT's RoadConfig.variant: road_1 (one angle and scale per feature pair), "
                          "road_2 (per feature), road_4 (two per feature).", choices=tuple(PER_FEATURE))
    group_size: int = option(16, "Features grouped for the pairing (PEFT's group_size; its default is 64). It "
                             "changes no result, only kernel speed, and must divide every target's output width: "
                             "16 here so that the demo model's 16-wide key projection takes it.", min=2, max=65536)
    target_preset: str = preset_option("RoAd")
    target_modules: str = modules_option()


def check(m, options):
    if options.group_size % 2:
        raise ExplorerError(f"group_size must be even (features are paired within a group), got {options.group_size}.")
    if m.out_features % options.group_size:
        raise ExplorerError(f"PEFT: the out_features of the base layer must be divisible by group_size "
                            f"({options.group_size}); {m.name} has {m.out_features}.")


def per_module(m, options):
    k = PER_FEATURE[options.variant]
    return k * m.out_features, f"{k}·{m.out_features}"


def products(m, options):
    return (Product(0),)  # elementwise only; the layer's output depends on trained scales


# Per-output-feature vectors ``_prepare_cols`` makes and keeps: road_1 repeats θ and α (two new tensors) and keeps
# them with their cos and sin; road_2 reads θ and α themselves (parameters), keeping only cos and sin; road_4 keeps
# cos, sin and the two flattened copies of α's halves.
COLUMN_VECTORS = {"road_1": 4, "road_2": 2, "road_4": 4}


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond explorer.costs.memory's generic count, as
    ``peft.tuners.road.layer._apply_road`` runs (result = x·first_col + rotate_half(x)·second_col on the frozen
    layer's output x), per adapted layer of out features:
    - per step, _prepare_cols' vectors (COLUMN_VECTORS × out), and where the layer's input needs a gradient (then so
      does its output: explorer.methods.saved_tensors) first_col and second_col (2·out), kept for x's gradient;
    - per token, x and rotate_half(x) (2·out), kept for the columns' gradients. The layer's input is not kept: the
      frozen layer needs none, and RoAd reads only its output, so the generic count of the adapted layers' inputs
      is taken back."""
    from ..costs.memory import distinct_inputs

    arch = spec.arch
    names = TUNER.targets(spec, options)
    outputs = sum(arch.by_name[n].out_features for n in names)
    step = COLUMN_VECTORS[options.variant] * outputs + 2 * sum(arch.by_name[n].out_features
                                                              for n in inputs_with_grad(arch, names))
    return step, 2 * outputs - distinct_inputs(arch, names)


def make_config(spec, options):
    from peft import RoadConfig

    return peft_config(RoadConfig, variant=options.variant, group_size=options.group_size,
                       **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config, check,
    name="road", title="RoAd", where="linear layers' outputs (learned 2-D rotations of feature pairs)",
    explanation="Freezes the model and learns, for chosen linear layers, an angle and a scale for each pair of "
                "output features: the pair is rotated in its plane and rescaled. Only elementwise work, about as "
                "few parameters as IA³.",
    when_to_use="Very tight parameter budgets: it trains a few entries per output feature and adds no matmul.",
    default_lr=3e-3, options_type=RoadOptions, mergeable=True,
    merge_reason="A rotation and scale of the output features is a fixed linear map, so it folds into W's rows.",
    peft_type="ROAD", artifact="RoAd adapter", in_default_race=False,
    literature=("Liao et al. 2024 (RoAd, abstract) claim RoAd matches or beats other PEFT methods on GLUE, "
                "commonsense and arithmetic reasoning with under 0.1% of the parameters trainable, and serves "
                "different adapters in one batch efficiently.",))


def adaptation(spec, options):
    step, token = saved(spec, options)
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=step, saved_per_token=token)


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
