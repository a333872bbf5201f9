"""FRoD (Wan et al. 2026, "FRoD: Full-Rank Efficient Fine-Tuning with Rotational Degrees for Fast Convergence"),
built by PEFT (``peft.tuners.frod``).

For each kind of adapted layer (PEFT's category: the last two parts of its name, e.g. self_attn_q_proj) PEFT stacks
the weights of every layer of that kind and derives one shared full-rank basis V (in × in) from them (a QR or an
SVD, ``peft.tuners.frod.model._projection_from_weights``). Each layer's own weight is then written W = U·diag(λ)·Vᵀ
(U out × in, λ the column norms of W·V⁻ᵀ; ``FrodLayer._calculate_frod_u_and_lambda``), and the adapted layer
computes x ↦ U·(S + diag(λ))·Vᵀ·x: λ trains, and so does a sparse S with nnz fixed off-diagonal positions drawn once
from projection_prng_key (nnz = ⌊in²·sparse_rate⌋, at least 1, at most in·(in − 1)). So in + nnz trainable per
layer: a full-rank update. PEFT saves V, the positions of S and its size per category (``save_projection=True``),
shown apart as frozen; U (out × in per layer) is a buffer it rebuilds from the base weight, not saved but held in
memory (as large as the weight itself).

FLOPs, as ``peft.tuners.frod.layer.Linear.forward`` runs them (one adapter, no dropout): the frozen layer is not run;
x·V (2·in² per token, V frozen: x's gradient only where x needs one), the sparse S and λ, then F.linear(·, U), which
replaces the frozen product at the same 2·in·out but whose input always needs its gradient (λ trains). The sparse
product is not a dense matmul going forward, but its backward is: S's gradient (always) and its input's (where x
needs one) are dense 2·in² products per token. Merged, U·(S + diag λ)·Vᵀ − W is added to W.

What a meta-device build cannot do: PEFT computes V and U from the weights' values (and copies them to the CPU),
which meta tensors do not have. So the calculator's exact count (built on the meta device) gives PEFT's FrodModel the
same parameters and saved buffers without their values (``_shape_only_tuner`` below: the tuner, its categories and
its injection are PEFT's; V, S's positions and U are stride-0 tensors of their shapes).
tests/test_peft_tuners_pvera.py checks the count, the buffers and the FLOPs against real CPU builds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Term
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("frod", "FRoD", conv1d=True)


@dataclass
class FrodOptions:
    sparse_rate: float = option(0.01, "Share of the in×in rotation matrix's off-diagonal entries that train (PEFT's "
                                "FrodConfig.sparse_rate): more capacity and more trained parameters.",
                                min=0.0, max=1.0)
    regularization_alpha: float = option(1e-3, "Ridge term that keeps the shared basis' inverses stable where "
                                         "layers of a kind are correlated (used only to build the basis).",
                                         min=0.0, max=1.0)
    projection_prng_key: int = option(0, "Seed of the sparse positions that train.", min=0, max=2**31 - 1)
    target_preset: str = preset_option("FRoD")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def nonzeros(width: int, sparse_rate: float) -> int:
    """PEFT's nnz of S for a basis of this width (``FrodModel._init_frod_projections``)."""
    off_diagonal = width * width - width
    nnz = min(int(width * width * sparse_rate), off_diagonal)
    return max(1, nnz) if sparse_rate > 0 and off_diagonal > 0 else nnz


def categories(spec, options) -> dict[str, list[str]]:
    """PEFT's category of each target -> its targets; one shared basis each, so one input width each."""
    from peft.tuners.frod.model import _category_from_key

    out: dict[str, list[str]] = {}
    for name in TUNER.targets(spec, options):
        out.setdefault(_category_from_key(name), []).append(name)
    for category, names in out.items():
        widths = {spec.arch.by_name[n].in_features for n in names}
        if len(widths) > 1:
            raise ExplorerError(f"FRoD shares one basis per kind of layer ({category}), and these layers of that kind "
                                f"have different input widths ({', '.join(map(str, sorted(widths)))}): target them "
                                "apart.")
    return out


def per_module(m, options):
    nnz = nonzeros(m.in_features, options.sparse_rate)
    return m.in_features + nnz, f"{m.in_features} (λ) + {nnz} (sparse S)"


def frozen_terms(spec, options) -> list[Term]:
    out = []
    for category, names in categories(spec, options).items():
        width = spec.arch.by_name[names[0]].in_features
        nnz = nonzeros(width, options.sparse_rate)
        count = width * width + 2 * nnz + 2
        out.append(Term(f"{category}: shared basis V and S's positions", count,
                        f"{width}² (V) + 2·{nnz} (positions) + 2 (size) = {count:,}"))
    return out


def products(m, options) -> tuple:
    """x·V before the (replaced) frozen product, whose input now always needs its gradient (λ trains). The sparse
    product's forward is not a dense matmul (not counted), but its backward is: torch.sparse.mm computes S's gradient
    as the dense (in × tokens)·(tokens × in) product before keeping the nnz entries, and its input's gradient as a
    dense product too (measured with torch's counter on real builds)."""
    basis = 2 * m.in_features * m.in_features
    sparse = basis if nonzeros(m.in_features, options.sparse_rate) else 0  # nnz 0: PEFT skips the product
    return (Product(basis, sparse, basis + sparse, feeds_base=True),)


def make_config(spec, options):
    from peft import FrodConfig

    categories(spec, options)
    return peft_config(FrodConfig, sparse_rate=options.sparse_rate, regularization_alpha=options.regularization_alpha,
                       projection_prng_key=options.projection_prng_key, progressbar=False,
                       fan_in_fan_out=TUNER.conv1d_targets(spec, options), **TUNER.peft_kwargs(spec, options))


def _stride_zero(shape, dtype):
    """A CPU tensor of this shape holding one value: PEFT's copies to the CPU leave it as it is (no memory)."""
    import torch

    return torch.zeros((), dtype=dtype, device="cpu").expand(*shape)


def _shape_only_tuner():
    """PEFT's FrodModel with the value-reading steps replaced by tensors of their shapes (see the module's
    docstring); everything else (categories, parameters, buffers and where they live) is PEFT's."""
    import torch
    from peft.tuners._buffer_dict import BufferDict
    from peft.tuners.frod import layer as frod_layer
    from peft.tuners.frod import model as frod_model
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    class ShapeOnlyLinear(frod_layer.Linear):
        def _calculate_frod_u_and_lambda(self, V, W):
            return (_stride_zero((self.out_features, self.in_features), W.dtype),
                    torch.empty(self.in_features, device="meta"))

    class ShapeOnlyFrodModel(frod_model.FrodModel):
        def _init_frod_projections(self, config, adapter_name):
            peft_config_ = frod_model._maybe_include_all_linear_layers(
                self._prepare_adapter_config(config, self.get_model_config(self.model)), self.model)
            widths = {}
            for key, module in self.model.named_modules():
                if self._check_target_module_exists(peft_config_, key) and isinstance(module, (nn.Linear, Conv1D)):
                    width = module.in_features if isinstance(module, nn.Linear) else module.weight.shape[0]
                    widths[frod_model._category_from_key(key)] = (width, module.weight.dtype)
            if not hasattr(self, "frod_V"):
                self.frod_V, self.frod_s_indices, self.frod_s_size = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
            for category, (width, dtype) in sorted(widths.items()):
                nnz = nonzeros(width, config.sparse_rate)
                for store, value in ((self.frod_V, _stride_zero((width, width), dtype)),
                                     (self.frod_s_indices, _stride_zero((2, nnz), torch.long)),
                                     (self.frod_s_size, _stride_zero((2,), torch.long))):
                    if category not in store:
                        store[category] = BufferDict({}, persistent=config.save_projection)
                    store[category][adapter_name] = value

        @staticmethod
        def _create_new_module(frod_config, frod_V, frod_s_indices, frod_s_size, adapter_name, target, **kwargs):
            conv1d = isinstance(getattr(target, "base_layer", target), Conv1D)
            return ShapeOnlyLinear(target, frod_V, frod_s_indices, frod_s_size, adapter_name, config=frod_config,
                                   is_target_conv_1d_layer=conv1d)

    return ShapeOnlyFrodModel


def apply(model, spec, options):
    from peft import get_peft_model

    config = make_config(spec, options)
    if any(p.device.type == "meta" for p in model.parameters()):
        return _shape_only_tuner()(model, config, "default")
    return get_peft_model(model, config)


PRODUCTS_ONLY = linear_method(
    TUNER, per_module, products, make_config,
    name="frod", title="FRoD", where="linear weights (a shared full-rank basis per kind of layer; trained scales "
                                     "and a few sparse rotations)",
    explanation="Rewrites each chosen weight in a basis shared by all layers of its kind (every q_proj, every "
                "down_proj ...), then trains only the scale of each basis direction and a small random set of "
                "couplings between directions: a full-rank change with few trained numbers.",
    when_to_use="Where a low-rank update seems too restrictive and the paper's fast convergence matters; setup "
                "runs a decomposition per kind of layer, and the rebuilt weights take as much memory as the "
                "weights they adapt.",
    default_lr=1e-3, options_type=FrodOptions, mergeable=True,
    merge_reason="U·(S + diag λ)·Vᵀ has the shape of W, so its difference from W is added into W: zero inference "
                 "overhead.",
    peft_type="FROD", artifact="FRoD adapter", in_default_race=False,
    meta_forward_refusal="FRoD's build reads the base weights' values and its forward multiplies by a sparse matrix, "
                         "neither of which runs on the meta device (tests/test_peft_tuners_pvera.py counts its FLOPs "
                         "on a real CPU build)",
    literature=("Wan et al. 2026 (FRoD, abstract) claim that on 20 benchmarks spanning vision, reasoning and "
                "language understanding FRoD matches full fine-tuning in accuracy with 1.72% of the trainable "
                "parameters under identical training budgets, and converges faster than low-rank methods.",))


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond explorer.costs.memory's generic count (every adapted
    layer's input), as ``peft.tuners.frod.layer.Linear.forward`` trains: per token z = x·V (in), kept for λ's and
    S's gradients, and not the layer's input (V and U are frozen buffers: only they are read back); per step, S
    twice (``_get_frod_tensors``: torch.sparse_coo_tensor's result and its coalesce(), each kept by the next
    operation's backward), nnz values with two int64 positions each, 20 bytes, counted as 5 elements (exact at
    float32 activations; at 16-bit ones the values are 16-bit and the formula counts 10 of their 18 bytes)."""
    from ..costs.memory import distinct_inputs

    arch = spec.arch
    names = TUNER.targets(spec, options)
    step = sum(2 * 5 * nonzeros(arch.by_name[n].in_features, options.sparse_rate) for n in names)
    return step, sum(arch.by_name[n].in_features for n in names) - distinct_inputs(arch, names)


def adaptation(spec, options) -> Adaptation:
    """The products, the buffers PEFT holds as memory: V per category and U per layer (float32, as VeRA's shared
    matrices are counted), and what its forward keeps for backward (saved)."""
    held = sum(t.count for t in frozen_terms(spec, options)) + sum(
        spec.arch.by_name[n].in_features * spec.arch.by_name[n].out_features for n in TUNER.targets(spec, options))
    step, token = saved(spec, options)
    return dataclasses.replace(PRODUCTS_ONLY.adaptation(spec, options), vera_shared=held, saved_per_step=step,
                               saved_per_token=token)


METHOD = dataclasses.replace(PRODUCTS_ONLY, adaptation=adaptation, apply=apply, frozen_terms=frozen_terms)
