"""PEANuT (Zhong et al. 2024, "PEANuT: Parameter-Efficient Adaptation with Weight-aware Neural Tweakers"), built by
PEFT (``peft.tuners.peanut``).

ΔW is computed from W itself by a small trained network: ΔWᵀ = scaling · B(f(…f(Wᵀ·Aᵀ)…)), where A maps each row of
Wᵀ (out features) to r, `depth` encoder and `depth` decoder layers (r×r, with residuals) follow, each after the
activation f (act_fn), and B maps r back to out (``PeanutLayer.update_layer``: A out×r, B r×out, 2·depth r×r, no
biases). So 2·r·out + 2·depth·r² trained parameters per adapted linear layer; B starts at zero, so training starts
from the base model. Unlike LoRA's, the update depends non-linearly on the frozen weight.

FLOPs, as ``peft.tuners.peanut.layer.Linear.forward`` runs them: once per forward, the tweaker network runs over
the in rows of Wᵀ (2·in·out·r for A, 2·in·r² per hidden layer, 2·in·r·out for B, each with its weight's gradient
in backward, and the hidden layers' and B's input gradients); then per token x·ΔWᵀ, a second dense product beside
the frozen one (2·in·out), whose right operand (ΔW) has a gradient always and whose input has one where the layer's
input needs it. Merged, ΔW (from the weight before merging) is added into W: no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("peanut", "PEANuT")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "linear")


@dataclass
class PeanutOptions:
    r: int = option(8, "PEFT's PeanutConfig.r: the width of the tweaker network (like LoRA's rank; PEFT's default is "
                    "32; 8 here, as for LoRA).", min=1, max=65536)
    depth: int = option(0, "PEFT's depth: hidden r×r layers per side (encoders and decoders, with residuals) between "
                        "A and B; 0 = A and B only.", min=0, max=64)
    act_fn: str = option("relu", "PEFT's act_fn: the activation between the tweaker's layers.", choices=ACTIVATIONS)
    scaling: float = option(1.0, "PEFT's scaling: multiplies ΔW before it is added.", min=0.0, max=1e6)
    init_weights: bool = option(True, "PEFT's init_weights: B starts at zero, so training starts from the base "
                                "model (false: B random too).")
    target_preset: str = preset_option("PEANuT")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def per_module(m, options):
    r, d, out = options.r, options.depth, m.out_features
    count = 2 * r * out + 2 * d * r * r
    return count, f"(2·{r}·{out} + 2·{d}·{r}²)" if d else f"2·{r}·{out}"


def products(m, options):
    n, out, r, d = m.in_features, m.out_features, options.r, options.depth
    a, hidden, b = 2 * n * out * r, 2 * n * r * r, 2 * n * r * out
    once = [Product(a, a, 0, per_token=False)]  # Wᵀ·Aᵀ: W frozen, A's gradient only
    once += [Product(hidden, 2 * hidden, 0, per_token=False)] * (2 * d)  # weight and input gradients
    once += [Product(b, 2 * b, 0, per_token=False)]
    dense = 2 * n * out  # x·ΔWᵀ per token: ΔW's gradient always, x's where the layer's input needs one
    return tuple(once) + (Product(dense, dense, dense),)


# Activations whose backward reads their output (the next layer's input, kept anyway): one r-wide tensor per
# application; the others (gelu, silu, leaky_relu) keep their input too. transformers' ACT2FN["linear"] is the identity.
OUTPUT_SAVING = ("relu", "tanh", "sigmoid", "linear")


def saved_per_step(spec, options) -> int:
    """What autograd keeps once per forward (``peft.tuners.peanut.layer.Linear._compute_delta_weight`` and
    ``forward``), in elements at the activations' width, per adapted layer:
    - the tweaker's intermediates, each in×r (one row per row of Wᵀ): after A and after each encoder, the
      activation's output (the next layer's input; gelu, silu and leaky_relu keep their input as well); after each
      decoder, its activation's saved tensor (none for the identity) and the sum with the residual (the next
      layer's input). Wᵀ itself is the frozen parameter;
    - ΔW (out×in), which x·ΔWᵀ keeps for its input's gradient where that input needs one
      (explorer.methods.saved_tensors)."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    d = options.depth
    per_encoder = 1 if options.act_fn in OUTPUT_SAVING else 2
    per_decoder = (0 if options.act_fn == "linear" else 1) + 1
    tweaker = sum(arch.by_name[n].in_features * options.r for n in names) * (per_encoder * (1 + d) + per_decoder * d)
    delta = sum(arch.by_name[n].out_features * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))
    return tweaker + delta


def make_config(spec, options):
    from peft import PeanutConfig

    return peft_config(PeanutConfig, r=options.r, depth=options.depth, act_fn=options.act_fn, scaling=options.scaling,
                       init_weights=options.init_weights, **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config,
    name="peanut", title="PEANuT", where="linear weights (an update computed from the weight by a small network)",
    explanation="Freezes the model and trains, for chosen linear layers, a small network that reads the frozen "
                "weight and writes its update: a non-linear, weight-aware alternative to LoRA's two fixed factors, "
                "at about LoRA's parameter count.",
    when_to_use="Where LoRA at a small rank falls short and a richer update at the same budget is wanted; each "
                "forward re-computes the update, so unmerged it costs a second dense product per layer.",
    default_lr=1e-3, options_type=PeanutOptions, mergeable=True,
    merge_reason="ΔW has the shape of W, so it is added into W: zero inference overhead.",
    peft_type="PEANUT", artifact="PEANuT adapter", in_default_race=False,
    literature=("Zhong et al. 2024 (PEANuT, abstract) claim that the weight-aware neural tweakers outperform "
                "LoRA and other baselines on both text and vision tasks, across four benchmarks and over twenty "
                "datasets.",))


def adaptation(spec, options):
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=saved_per_step(spec, options))


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
