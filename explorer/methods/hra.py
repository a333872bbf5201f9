"""HRA (Yuan, Zhang, Xu & Zhang 2024, "Bridging The Gap between Low-rank and Orthogonal Adaptation via
Householder Reflection Adaptation"), built by PEFT (``peft.tuners.hra``).

Each adapted linear layer's weight is multiplied by a chain of r Householder reflections,
W' = W·H_1···H_r, H_i = I - 2·u_i·u_iᵀ/‖u_i‖²: an orthogonal update (as OFT) that equals a rank-r change of W
(as LoRA). Trained: the r vectors u_i ∈ ℝ^in, so r·in parameters per layer. With apply_GS the vectors are
made orthonormal first (Gram-Schmidt), the paper's regularised form.

FLOPs, as ``peft.tuners.hra.layer.HRALinear`` runs them: each forward builds the in×in product of the
reflections (two matrix-vector-like products of 2·in² per reflection, or Gram-Schmidt and one in×r×in
product), multiplies it by an identity (2·in³) and by the frozen W (2·out·in²), then runs F.linear with that
new weight instead of the frozen layer: per token the same 2·in·out, plus the weight's gradient in backward.
Merged, W' is an ordinary weight: no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("hra", "HRA")


@dataclass
class HRAOptions:
    r: int = option(8, "Number of Householder reflections per layer (PEFT's HRAConfig.r); even, so that PEFT "
                    "starts from the identity (pairs of equal reflections).", min=1, max=4096)
    apply_GS: bool = option(False, "Orthogonalise the reflection vectors (Gram-Schmidt) before use.")
    target_preset: str = preset_option("HRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def per_module(m, options):
    return options.r * m.in_features, f"{options.r}·{m.in_features}"


def products(m, options):
    n, r, out = m.in_features, options.r, m.out_features
    square = 2 * n * n
    if options.apply_GS:  # r(r-1)/2 projections of 2·in, then I - 2·U·Uᵀ; every operand depends on u
        build = r * (r - 1) * n + 2 * n * r * n
        reflections = Product(build, 2 * build, 0, per_token=False)
    else:  # weight - 2·(weight·u)·uᵀ per reflection; the first one's weight is the identity (no gradient)
        reflections = Product(r * 2 * square, r * 4 * square - square, 0, per_token=False)
    assemble = Product(2 * n ** 3 + 2 * out * n * n, 2 * n ** 3 + 2 * out * n * n, 0, per_token=False)
    dense = 2 * n * out  # F.linear(x, W') replaces the frozen product: its forward is counted as the layer's own
    return reflections, assemble, Product(0, dense, 0)


def saved_per_step(spec, options) -> int:
    """What autograd keeps once per forward (``peft.tuners.hra.layer.HRALinear.forward`` and ``get_delta_weight``),
    in elements at the activations' width, per adapted layer of out×in with r reflections:
    - without Gram-Schmidt: the r column norms and the normalized U (in×r); the running product before each
      reflection, weight − 2·(weight·u)·uᵀ keeps weight (in×in, the identity first: r of them) and weight·u (in
      each, r of them);
    - with it (apply_GS): r norms, r − 1 row vectors uᵀ, for each of the r(r−1)/2 projections its 1×1 coefficient
      and its in-wide vector, the stacked U and its transpose (in×r each); I − 2·U·Uᵀ keeps only those;
    - the identity (in×in) that torch.mm(eye, ΔW) keeps for ΔW's gradient in forward;
    - W·R (out×in, a new tensor; W·R's product keeps only the frozen W), which F.linear keeps for its input's
      gradient where that input needs one (explorer.methods.saved_tensors)."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    r = options.r
    total = 0
    for name in names:
        n = arch.by_name[name].in_features
        if options.apply_GS:
            total += n * n + r + (r - 1) * n + r * (r - 1) // 2 * (n + 1) + 2 * r * n
        else:
            total += (r + 1) * n * n + r + 2 * r * n
    return total + sum(arch.by_name[n].out_features * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))


def make_config(spec, options):
    from peft import HRAConfig

    return peft_config(HRAConfig, r=options.r, apply_GS=options.apply_GS, **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config,
    name="hra", title="HRA", where="linear weights (a chain of learned Householder reflections)",
    explanation="Freezes the model and multiplies, for chosen linear layers, the weight by r Householder "
                "reflections W·H_1···H_r, each defined by one trained vector: an orthogonal change of W that is "
                "also a rank-r update.",
    when_to_use="To try orthogonal fine-tuning with LoRA-like parameter counts (r vectors per layer).",
    default_lr=1e-3, options_type=HRAOptions, mergeable=True,
    merge_reason="W·H_1···H_r is an ordinary weight of W's shape, so it replaces W: zero inference overhead.",
    peft_type="HRA", artifact="HRA adapter", in_default_race=False,
    literature=("Yuan et al. 2024 (HRA, abstract) claim HRA bridges low-rank and orthogonal adaptation and beats "
                "state-of-the-art methods with fewer trainable parameters when adapting large language and "
                "conditional image generation models.",))


def adaptation(spec, options):
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=saved_per_step(spec, options))


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
