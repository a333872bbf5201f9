"""GLoRA (Chavan et al. 2023, "One-for-All: Generalized LoRA for Parameter-Efficient Fine-tuning"), built by PEFT
(``peft.tuners.glora``).

One frozen linear layer W0 (bias b0) becomes W = W0 + W0 ⊙ A + B and b = b0 + b0 ⊙ D + E + W0·C: A and B correct
the weight (multiplied by it, added to it), C, D and E the bias. Each is parameterised as PEFT's config says
(``GloraLayer.update_layer``): config_A_B "lora" gives A and B each a rank-r pair Xd·Xu, so 2·r·(out + in) per
layer; "vector" one column of out each (2·out); "constant" one number each (2); "none" nothing. C, D and E exist
only where the layer has a bias (Qwen's q, k, v projections): config_C "lora" r·(in + 1), "vector" in; config_D_E
"vector" 2·out, "constant" 2. A path set to "none" (or a bias path on a layer without bias) is a zero buffer
PEFT saves with the adapter (``GloraEmptyPath``): out·in for A and B each, in for C, out for D and E each: shown
apart, as frozen.

FLOPs, as ``peft.tuners.glora.layer.GloraLinear.forward`` runs them: the frozen layer runs as usual, and beside
it F.linear(x, W0 + W0 ⊙ A + B): a second 2·in·out per token, whose weight trains (its gradient, 2·in·out per
token) whenever A or B does. Once per forward: each rank-r A and B is built as Xd·Xu (2·out·r·in, and twice that
in backward for Xd's and Xu's gradients), and on a layer with a bias W0·C (2·out·in; C's gradient W0ᵀ·g the same
again where C trains), C itself Xd·Xu (2·in·r) when it is a rank-r pair. So unmerged GLoRA costs about one more
layer per adapted layer; merged, W and b fold into the layer: no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .base import Term
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, grouped_terms, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("glora", "GLoRA")


@dataclass
class GloraOptions:
    r: int = option(8, "Rank of the low-rank pairs Xd·Xu where a path is 'lora' (PEFT's GloraConfig.r).", min=1,
                    max=4096)
    config_A_B: str = option("lora", "A and B, the weight's corrections (W0 + W0⊙A + B): 'lora' a rank-r pair each, "
                             "r·(out+in) parameters; 'vector' one value per output; 'constant' one number; 'none' "
                             "off.", choices=("lora", "vector", "constant", "none"))
    config_C: str = option("lora", "C, the bias's coupling to the weight (b + W0·C), on layers with a bias only: "
                           "'lora' a rank-r column, 'vector' one value per input, 'none' off.",
                           choices=("lora", "vector", "none"))
    config_D_E: str = option("constant", "D and E, the bias's corrections (b0 + b0⊙D + E), on layers with a bias "
                             "only: 'vector' one value per output, 'constant' one number each, 'none' off.",
                             choices=("vector", "constant", "none"))
    init_weights: bool = option(True, "Start as the base model (PEFT's init_weights: Xd at zero); false starts "
                                "from a random, non-zero update.")
    target_preset: str = preset_option("GLoRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def trained_paths(m, o) -> list[tuple[str, int, str]]:
    """(path, count, expression) of every path that trains on this layer (PEFT's update_layer)."""
    out, fan_in, r = m.out_features, m.in_features, o.r
    paths = {"lora": (2 * r * (out + fan_in), f"2·{r}·({out}+{fan_in}) (A, B)"), "vector": (2 * out, f"2·{out} (A, B)"),
             "constant": (2, "2 (A, B)")}
    found = [("A_B", *paths[o.config_A_B])] if o.config_A_B in paths else []
    if m.bias:
        bias_c = {"lora": (r * (fan_in + 1), f"{r}·({fan_in}+1) (C)"), "vector": (fan_in, f"{fan_in} (C)")}
        bias_de = {"vector": (2 * out, f"2·{out} (D, E)"), "constant": (2, "2 (D, E)")}
        found += [("C", *bias_c[o.config_C])] if o.config_C in bias_c else []
        found += [("D_E", *bias_de[o.config_D_E])] if o.config_D_E in bias_de else []
    return found


def per_module(m, o):
    paths = trained_paths(m, o)
    return sum(c for _, c, _ in paths), " + ".join(e for _, _, e in paths) or "0"


def zero_buffers(m, o) -> tuple[int, str]:
    """The zero buffers PEFT keeps (and saves) for the paths that are off on this layer."""
    out, fan_in = m.out_features, m.in_features
    parts = [(2 * out * fan_in, f"2·{out}·{fan_in} (A, B)")] if o.config_A_B == "none" else []
    if not m.bias or o.config_C == "none":
        parts.append((fan_in, f"{fan_in} (C)"))
    if not m.bias or o.config_D_E == "none":
        parts.append((2 * out, f"2·{out} (D, E)"))
    return sum(c for c, _ in parts), " + ".join(e for _, e in parts) + " zeros"


def products(m, o):
    out, fan_in, r = m.out_features, m.in_features, o.r
    names = {name for name, _, _ in trained_paths(m, o)}
    dense = 2 * fan_in * out
    weight_trains = "A_B" in names
    found = [Product(dense, dense if weight_trains else 0, dense)]  # F.linear(x, W0 + W0⊙A + B)
    if o.config_A_B == "lora":  # A and B built as Xd·Xu once per forward; both factors' gradients in backward
        found.append(Product(2 * 2 * out * r * fan_in, 2 * 4 * out * r * fan_in, 0, per_token=False))
    if m.bias:
        c_trains = "C" in names
        build_c = 2 * fan_in * r if o.config_C == "lora" else 0
        found.append(Product(dense + build_c, (dense + 2 * build_c) if c_trains else 0, 0, per_token=False))
    return tuple(found)


def make_config(spec, options):
    from peft import GloraConfig

    return peft_config(GloraConfig, r=options.r, config_A_B=options.config_A_B, config_C=options.config_C,
                       config_D_E=options.config_D_E, init_weights=options.init_weights,
                       **TUNER.peft_kwargs(spec, options))


def check(m, options):
    if not trained_paths(m, options):
        raise ExplorerError(f"GLoRA with config_A_B 'none' trains nothing on {m.name} (it has no bias for C, D and "
                            "E, or they are off too): pick lora, vector or constant.")


def frozen_terms(spec, options) -> list[Term]:
    return [t for t in grouped_terms(spec, TUNER.targets(spec, options), lambda m: zero_buffers(m, options))
            if t.count]


def saved_per_step(spec, options) -> int:
    """What autograd keeps once per forward (``peft.tuners.glora.layer.GloraLinear.forward``), in elements at the
    activations' width: weight_eff = W0 + W0⊙A + B (out×in, a new tensor every forward, whatever the paths: even
    with config_A_B 'none' it is a sum, not the parameter), which F.linear keeps for its input's gradient where that
    input needs one (explorer.methods.saved_tensors). A and B themselves (Xd·Xu) are not kept: W0⊙A keeps the
    frozen W0 for A's gradient, and a sum keeps nothing; the bias path keeps only the frozen W0 and b0 likewise."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    return sum(arch.by_name[n].out_features * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))


def adaptation(spec, options):
    """The products, the zero buffers as memory (float32, as VeRA's shared matrices are counted), and what the
    forward keeps (saved_per_step)."""
    held = sum(t.count for t in frozen_terms(spec, options))
    return dataclasses.replace(PRODUCTS_ONLY.adaptation(spec, options), vera_shared=held,
                               saved_per_step=saved_per_step(spec, options))


PRODUCTS_ONLY = linear_method(
    TUNER, per_module, products, make_config, check,
    name="glora", title="GLoRA", where="linear weights and biases (scaled and shifted: W0 + W0⊙A + B)",
    explanation="Generalises LoRA: each chosen layer's weight is both scaled (W0⊙A) and shifted (+B) by trained "
                "corrections, and its bias too, each correction being a low-rank pair, a vector, one number or "
                "off. It trains about twice LoRA's parameters at the same rank.",
    when_to_use="When a single adaptation recipe should cover different tasks (the paper searches the paths per "
                "layer; PEFT's config fixes them for all layers); unmerged it runs each layer twice.",
    default_lr=1e-3, options_type=GloraOptions, mergeable=True,
    merge_reason="W0 + W0⊙A + B and the corrected bias have the layer's own shapes, so they replace it: zero "
                 "inference overhead.",
    peft_type="GLORA", artifact="GLoRA adapter", in_default_race=False,
    literature=("Chavan et al. 2023 (GLoRA, abstract) claim that GLoRA outperforms all previous methods on natural, "
                "specialized and structured vision benchmarks with fewer parameters and computations, shows "
                "considerable enhancements over LoRA on LLaMA-1 and LLaMA-2, and, re-parameterised, incurs no "
                "extra inference cost.",))
METHOD = dataclasses.replace(PRODUCTS_ONLY, adaptation=adaptation, frozen_terms=frozen_terms)
