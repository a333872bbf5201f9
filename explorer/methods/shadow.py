"""ShadowPEFT (Li et al. 2026, "ShadowPEFT: Shadow Network for Parameter-Efficient Fine-Tuning"), built by PEFT
(``peft.tuners.shadow``): a small trained "shadow" network runs beside the frozen model and steers it block by block.

What PEFT builds (``ShadowModel._build_shadow_backbone``, ``ShadowLayer.update_layer``), with the default "mirror":
- a shadow backbone: the model's own inner network (LlamaModel, GPT2Model, ...) rebuilt from its config with
  shadow_num_hidden_layers blocks (1 by default) and, where set, another hidden size, head count or feed-forward
  width; freshly initialised and trained whole. Where its width is the model's, it reads the model's frozen input
  embeddings and PEFT drops its own embed_tokens (GPT-2's wte has another name: PEFT keeps it, trained and unused);
  where the width differs it keeps its own embeddings and a projection (shadow width → model width, no bias) follows;
- per decoder block (every block: PEFT's default target_modules): an injection bottleneck W_down (d→r) and W_up
  (r→d, zero at the start), and two update MLPs T and G (d→u→d with biases, u = update_hidden_size or r):
  2·d·r + 2·(2·d·u + u + d) trained parameters per block.
The backbone's output s⁰ rides the decoder loop: before each block, h += α·W_up(dropout(W_down(h − s))); after
it, s = (1 − σ(G(h)))·s + σ(G(h))·T(h) (the paper's Eq. 2-7). Its parameter count is read from the same derived
table the Calculator reads for any model (explorer.costs.derive), built from the config PEFT builds.

FLOPs: the backbone is a network of its own on the same tokens (its blocks' products and attention, counted by
the same formula as the model's: Adaptation.side_models, every weight trained); each block adds the bottleneck's
and the two MLPs' products per token, whose inputs always need gradients (the shadow state trains), and the first
block's input now depends on trained weights, so its frozen products pay input gradients. Training with labels
also runs the LM head over s⁰ for PEFT's auxiliary loss (auxiliary_loss_weight; 2·d·vocab per token more, forward
and backward), which the per-pass formula, as torch's counter on a forward without labels, does not include.

Merging: none (``ShadowModel._check_merge_allowed``): the update depends on each input, not a weight delta.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..costs.specs import ModelSpec
from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, Term


@dataclass
class ShadowOptions:
    r: int = option(8, "PEFT's ShadowConfig.r: the rank of each block's injection bottleneck (W_down d→r, W_up "
                    "r→d).", min=1, max=65536)
    shadow_alpha: float = option(0.1, "PEFT's shadow_alpha: the strength of the injected correction.", min=0.0,
                                 max=1e6)
    shadow_dropout: float = option(0.2, "PEFT's shadow_dropout: dropout on the difference h − s before the "
                                   "bottleneck.", min=0.0, max=0.99)
    init_weights: bool = option(True, "PEFT's init_weights: W_up starts at zero, so the injection starts as a "
                                "no-op (PEFT advises keeping it).")
    shadow_num_hidden_layers: int = option(1, "PEFT's shadow_num_hidden_layers: blocks of the shadow backbone (a "
                                           "copy of this model's block kind, freshly initialised).", min=1, max=1024)
    shadow_hidden_size: int = option(0, "PEFT's shadow_hidden_size: the backbone's width; 0 = the model's (then "
                                     "it reads the model's embeddings; another width keeps its own and adds a "
                                     "projection).", min=0, max=65536)
    shadow_num_attention_heads: int = option(0, "PEFT's shadow_num_attention_heads; 0 = the model's.", min=0,
                                             max=4096)
    shadow_intermediate_size: int = option(0, "PEFT's shadow_intermediate_size: the backbone's feed-forward width; "
                                           "0 = the model's.", min=0, max=1048576)
    share_embeddings: bool = option(True, "PEFT's share_embeddings: the backbone reads the model's frozen input "
                                    "embeddings (at the model's width) instead of training a table of its own.")
    update_hidden_size: int = option(0, "PEFT's update_hidden_size: the hidden width u of the update MLPs T and G; "
                                     "0 = r.", min=0, max=65536)
    auxiliary_loss_weight: float = option(0.05, "PEFT's auxiliary_loss_weight: the weight of the shadow path's own "
                                          "loss (the LM head on the backbone's output), added to the training "
                                          "loss; 0 leaves it out.", min=0.0, max=1e6)


def mirror_config(spec, options):
    """The backbone's config exactly as PEFT makes it (``ShadowModel._build_shadow_backbone``: its own helpers)."""
    from peft.tuners.shadow.model import _normalize_layer_config, _set_config_attr

    config = copy.deepcopy(spec.config)
    try:
        _set_config_attr(config, ("num_hidden_layers", "n_layer", "num_layers"), options.shadow_num_hidden_layers)
        for value, names in ((options.shadow_hidden_size, ("hidden_size", "n_embd", "d_model")),
                             (options.shadow_intermediate_size, ("intermediate_size", "ffn_dim", "n_inner")),
                             (options.shadow_num_attention_heads, ("num_attention_heads", "n_head", "num_heads"))):
            if value:
                _set_config_attr(config, names, value)
    except AttributeError as error:
        raise ExplorerError(f"PEFT: {str(error).splitlines()[0]}") from None
    return _normalize_layer_config(config)


_mirrors: dict[tuple, object] = {}


def backbone_arch(spec, options):
    """The backbone's derived table (as the Calculator derives any model), memoized per model and options."""
    key = (spec.key, options.shadow_num_hidden_layers, options.shadow_hidden_size, options.shadow_intermediate_size,
           options.shadow_num_attention_heads)
    arch = _mirrors.get(key)
    if arch is None:
        config = mirror_config(spec, options)
        raw = config.to_dict()  # the identity of the derived table (explorer.costs.specs caches by it)
        arch = ModelSpec(f"{spec.name} shadow backbone", "upload", config, raw=raw).arch
        if len(_mirrors) > 64:
            _mirrors.clear()
        _mirrors[key] = arch
    return arch


def shadow_width(spec, options) -> int:
    return options.shadow_hidden_size or spec.arch.hidden


def shares_embeddings(spec, options) -> bool:
    """PEFT's rule (``_init_shadow_backbone``): the model's embeddings feed the backbone where the widths match."""
    return options.share_embeddings and shadow_width(spec, options) == spec.arch.hidden


def backbone_params(spec, options) -> tuple[int, str]:
    """(count, expression) of the backbone: the derived model's parameters less its LM head, and less its
    embed_tokens where PEFT drops them (``_remove_embed_tokens``: that name only)."""
    arch = backbone_arch(spec, options)
    total, parts = arch.total, [f"{arch.layers} block{'s' if arch.layers > 1 else ''} and final norm of this model"]
    if arch.head and not arch.tied:
        total -= arch.params_under(arch.head)
    embed = arch.params_under(arch.embed)
    dropped = shares_embeddings(spec, options) and arch.embed.rpartition(".")[2] == "embed_tokens"
    if dropped:
        total -= embed
        parts[0] += " (the model's embeddings shared)"
    else:
        parts.append(f"its own embeddings ({embed:,})")
    return total, " + ".join(parts)


def update_width(options) -> int:
    return options.update_hidden_size or options.r


def terms(spec, options) -> list[Term]:
    d, r, u, layers = spec.arch.hidden, options.r, update_width(options), spec.arch.layers
    count, expression = backbone_params(spec, options)
    out = [Term("shadow_backbone", count, f"{expression} = {count:,}")]
    width = shadow_width(spec, options)
    if width != d:
        out.append(Term("shadow_projection", width * d, f"{width}·{d} = {width * d:,}"))
    inject, update = 2 * d * r, 2 * (2 * d * u + u + d)
    out.append(Term("shadow_down, shadow_up", inject * layers, f"2·{d}·{r} × {layers} blocks = {inject * layers:,}"))
    out.append(Term("shadow_update_transform, shadow_update_gate", update * layers,
                    f"2·(2·{d}·{u} + {u} + {d}) × {layers} blocks = {update * layers:,}"))
    return out


def block_products(d: int, r: int, u: int, last: bool) -> tuple:
    """A block's injection and update, per token; every input needs a gradient (h − s and the block's output depend
    on trained weights), so input and weight gradients are both paid. The last block's update runs but nothing
    reads its result (``_unwrap_exit_hook`` hands on the hidden states only): no backward."""
    inject = tuple(Product(f, 2 * f, 0) for f in (2 * d * r, 2 * r * d))
    update = tuple(Product(f, 0 if last else 2 * f, 0) for f in (2 * d * u, 2 * u * d) * 2)
    return inject + update


def adaptation(spec, options) -> Adaptation:
    arch = spec.arch
    d, r, u, width = arch.hidden, options.r, update_width(options), shadow_width(spec, options)
    # the backbone's output projected to the model's width (a trained linear, no bias), where the widths differ
    projection = (Product(2 * width * d, 2 * 2 * width * d, 0),) if width != d else ()
    products = {}
    for layer in range(arch.layers):
        readers = [op.name for op in arch.block(layer).ops if op.linear and "input" in op.a]
        prefix = f"{arch.layers_path}.{layer}."
        # the injected input depends on trained weights: its readers' frozen products pay input gradients
        products.update({prefix + name: (Product(0, feeds_base=True),) for name in readers})
        products[prefix + readers[0]] = (block_products(d, r, u, layer == arch.layers - 1)
                                          + (projection if layer == 0 else ()) + (Product(0, feeds_base=True),))
    side = dataclasses.replace(backbone_arch(spec, options), head="")
    return Adaptation(products=products, side_models=((side, Adaptation(full=True)),),
                      saved_per_token=saved_per_token(spec, options, list(products)))


def saved_per_token(spec, options, products: list[str]) -> int:
    """Elements per token autograd keeps beyond explorer.costs.memory's generic count, as PEFT's shadow tuner trains
    (measured with torch's saved-tensor hooks, tests/test_memory_saved.py):
    - per decoder block (``ShadowLayer``'s hooks): W_down's input h − s (d; dropped out, with dropout's mask beside
      it, as wide on CPU: torch's unfused dropout), W_up's input (r), the update's input h (d, read by T and G),
      each update MLP's activation input and output (2u each), and the gated mix s' = (1 − σ)·s + σ·T(h) keeps σ,
      1 − σ, T(h) and s (4d); the last block's update runs too;
    - not the inputs of the frozen linears listed as products (their weights do not train: the generic count
      keeps them for a tuner's products, so they are taken off here);
    - the shadow backbone (Adaptation.side_models), a model of its own whose weights all train: its blocks as
      explorer.costs.memory counts a trained block, its final norm with its trained weight; where it reads the
      model's frozen embeddings, its first norm's input needs no gradient (only the normalized input is kept, for
      the norm's weight); with its own embeddings (another width), their backward's int64 token ids (2 elements)
      and the projection's input (its width);
    - PEFT's auxiliary loss (``ShadowModel.shadow_auxiliary_loss``, computed whenever labels are given, even at
      auxiliary_loss_weight 0, where its graph is freed only as the forward returns, at the activations' peak): the
      LM head over s⁰, whose log-softmax keeps vocab float32 numbers per token (the shifted sequence: one row fewer
      per sequence) and the int64 labels (2)."""
    from ..costs import memory

    arch = spec.arch
    d, r, u = arch.hidden, options.r, update_width(options)
    per_block = 2 * d + d * (options.shadow_dropout > 0) + r + 4 * u + 4 * d
    total = arch.layers * per_block - memory.distinct_inputs(arch, products)
    side = backbone_arch(spec, options)
    total += sum(memory.block_activations_per_token(side, kind, trains_weights=True) for kind in side.layer_kind)
    total += memory.final_norm_per_token(side, trained=True)
    if shares_embeddings(spec, options):
        total -= memory.block_stages(side, side.layer_kind[0], True)["attention_norm"] - side.hidden
    else:
        total += 2 + (side.hidden if side.hidden != d else 0)
    return total + arch.vocab + 2


def make_config(spec, options):
    from peft import ShadowConfig

    from .tuners import peft_config

    return peft_config(ShadowConfig, r=options.r, shadow_alpha=options.shadow_alpha,
                       shadow_dropout=options.shadow_dropout, init_weights=options.init_weights,
                       shadow_num_hidden_layers=options.shadow_num_hidden_layers,
                       shadow_hidden_size=options.shadow_hidden_size or None,
                       shadow_num_attention_heads=options.shadow_num_attention_heads or None,
                       shadow_intermediate_size=options.shadow_intermediate_size or None,
                       share_embeddings=options.share_embeddings,
                       update_hidden_size=options.update_hidden_size or None,
                       auxiliary_loss_weight=options.auxiliary_loss_weight)


def validate(spec, options):
    make_config(spec, options)
    heads, kv = options.shadow_num_attention_heads, getattr(spec.config, "num_key_value_heads", None)
    if heads and kv and heads % kv:
        raise ExplorerError(f"ShadowPEFT: the backbone's {heads} attention heads cannot share this model's {kv} "
                            f"key/value heads (PEFT keeps those); use a multiple of {kv}.")
    try:
        backbone_arch(spec, options)
    except ExplorerError as error:  # transformers' own refusal of the backbone's sizes, in one line
        raise ExplorerError(f"ShadowPEFT's backbone at these sizes: {error}") from None


def apply(model, spec, options):
    from peft import get_peft_model

    return get_peft_model(model, make_config(spec, options))


def training_loss(model, batch):
    """PEFT's own loss: ``ShadowModel.forward`` adds the shadow path's auxiliary loss when labels are given."""
    return model(**batch).loss


METHOD = Method(
    name="shadow", title="ShadowPEFT", where="a small parallel network that steers every decoder block",
    explanation="Freezes the model and trains a small shadow network beside it: a one-block copy of the model "
                "reads the same tokens, and before each block a low-rank bottleneck injects the difference between "
                "the model's state and the shadow's; after each block the shadow state is updated through a gate. "
                "The shadow can also run alone as a small model.",
    when_to_use="When an adapter that reacts to each input (not a fixed weight change) is wanted, or a small "
                "standalone model as a by-product. At PEFT's defaults its backbone is a whole block of the model, "
                "far more than LoRA trains; a narrower backbone (shadow_hidden_size, shadow_intermediate_size) "
                "brings it near LoRA's budget, as the paper compares them.",
    default_lr=1e-3, options_type=ShadowOptions, mergeable=False,
    merge_reason="ShadowPEFT cannot merge: its update depends on each input (a shadow state carried through the "
                 "blocks), not a fixed change of the weights, so the shadow network always runs beside the model.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply, validate=validate,
    training_loss=training_loss, peft_type="SHADOW", artifact="ShadowPEFT adapter", in_default_race=False,
    literature=("Li et al. 2026 (ShadowPEFT, arXiv:2604.19254, abstract) claim that ShadowPEFT matches or "
                "outperforms LoRA and DoRA under comparable trainable-parameter budgets on generation and "
                "understanding benchmarks, and that the shadow network can be pretrained on its own and deployed "
                "detached for edge inference.",))
