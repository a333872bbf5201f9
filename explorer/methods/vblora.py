"""VB-LoRA (Li, Han & Ji 2024, "VB-LoRA: Extreme Parameter Efficient Fine-Tuning with Vector Banks"), built by PEFT
(``peft.tuners.vblora``).

LoRA's factors A (r × in) and B (out × r) are not stored: they are cut into sub-vectors of vector_length entries,
and each sub-vector is a mixture of the top-k of num_vectors vectors in one bank shared by every adapted layer,
weighted by the softmax of its k largest logits. Trained: the bank (num_vectors·vector_length, once for the whole
model) and, per layer, one logit per bank vector for each sub-vector: r·(in/vector_length)·num_vectors for A and
(out/vector_length)·r·num_vectors for B (``VBLoRALayer.update_layer``). PEFT's bank is a trained parameter
(``VBLoRAModel._init_vblora_vector_bank``; its name carries the ``vblora_`` prefix that marks adapter weights).

FLOPs, as ``peft.tuners.vblora.layer.Linear.forward`` runs them: A and B are assembled from the bank by top-k,
softmax and a weighted sum (element-wise work, not counted by torch's counter nor here), then applied as LoRA's
two products, F.linear(F.linear(x, A), B): 2·in·r + 2·r·out per token, both factors trained. Merged, B·A folds
into W: no overhead.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, Term
from .saved_tensors import dropout_per_token, inputs_with_grad
from .tuners import Tuner, exclude_option, grouped_terms, modules_option, peft_config, preset_option

TUNER = Tuner("vblora", "VB-LoRA", conv1d=True)
LONGEST_AUTO = 256  # PEFT's default vector_length, and the paper's for Llama 2


@dataclass
class VBLoRAOptions:
    r: int = option(4, "Rank of the assembled LoRA factors (PEFT's VBLoRAConfig.r).", min=1, max=4096)
    num_vectors: int = option(256, "Vectors in the shared bank (num_vectors); every layer's logits have one entry "
                              "per vector, so the count grows with it.", min=1, max=65536)
    vector_length: int = option(0, "Length of the bank's vectors: it must divide every target's in and out "
                                "features. 0 = the largest that does, at most 256 (PEFT's default is 256, which "
                                "the widths of small models such as SmolLM2-135M's 576 do not divide).",
                                min=0, max=65536)
    topk: int = option(2, "Bank vectors mixed into each sub-vector (top-k of its logits); the paper finds 2 best.",
                       min=1, max=65536)
    vblora_dropout: float = option(0.0, "Dropout on the VB-LoRA path's input during training.", min=0.0, max=0.9)
    init_vector_bank_bound: float = option(0.02, "The bank starts uniform in ±this bound (not zero: its gradient "
                                           "would be zero).", min=0.0, max=1.0)
    init_logits_std: float = option(0.1, "Standard deviation of the logits' normal start.", min=0.0, max=10.0)
    target_preset: str = preset_option("VB-LoRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def widths(spec, options) -> list[int]:
    return [w for n in TUNER.targets(spec, options) for w in (spec.arch.by_name[n].in_features,
                                                                 spec.arch.by_name[n].out_features)]


def resolved(spec, options) -> VBLoRAOptions:
    """The options with vector_length chosen (0: the largest divisor of every target width, at most 256) and
    checked as PEFT checks each layer (in ``update_layer``, mid-build) before anything is built."""
    if options.topk > options.num_vectors:
        raise ExplorerError(f"VB-LoRA: topk ({options.topk}) must be at most num_vectors ({options.num_vectors}): "
                            "each sub-vector mixes topk of the bank's vectors.")
    common = math.gcd(*widths(spec, options))
    length = options.vector_length or max(d for d in range(1, min(common, LONGEST_AUTO) + 1) if common % d == 0)
    for name in TUNER.targets(spec, options):
        m = spec.arch.by_name[name]
        for side, width in (("in_features", m.in_features), ("out_features", m.out_features)):
            if width % length:
                raise ExplorerError(f"PEFT: `{side}` {width} of {name} must be divisible by `vector_length` "
                                    f"{length}; the widths of these targets share {common}, so use a divisor of it "
                                    "(or 0 to choose one).")
    return dataclasses.replace(options, vector_length=length)


def per_module(m, o):
    a_tiles, b_tiles = m.in_features // o.vector_length, m.out_features // o.vector_length
    count = (o.r * a_tiles + b_tiles * o.r) * o.num_vectors
    return count, f"({o.r}·{a_tiles} + {b_tiles}·{o.r}) logits × {o.num_vectors} vectors"


def terms(spec, options) -> list[Term]:
    o = resolved(spec, options)
    bank = o.num_vectors * o.vector_length
    return grouped_terms(spec, TUNER.targets(spec, o), lambda m: per_module(m, o)) + [
        Term("vector bank (shared by every layer)", bank, f"{o.num_vectors}·{o.vector_length} = {bank:,}")]


def products(m, r: int) -> tuple:
    down, up = 2 * m.in_features * r, 2 * r * m.out_features  # LoRA's two products at rank r, both factors trained
    return Product(down, down, down), Product(up, 2 * up, 0)


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond every adapted layer's input, as ``peft.tuners.vblora.
    layer.Linear.forward`` runs (vblora_dropout > 0: saved_tensors.dropout_per_token, A reading the dropped copy).
    Each forward assembles A (r × in) and B (out × r) from the bank (``_get_low_rank_matrix``): per sub-vector,
    topk's indices (int64, kept by topk and by the bank's indexing: 2 elements each at float32), the softmax of the
    top-k logits (kept by softmax and by the weighting) and the topk bank vectors it weights, r·topk·(in + out)
    numbers; then F.linear(x, A) keeps A where x needs a gradient (explorer.methods.saved_tensors), F.linear(h, B)
    keeps B (a reshaped copy) and h, r per token, for B's gradient."""
    o = resolved(spec, options)
    arch = spec.arch
    names = TUNER.targets(spec, o)
    step = 0
    for name in names:
        m = arch.by_name[name]
        tiles = (m.in_features + m.out_features) // o.vector_length
        step += o.r * o.topk * tiles * (2 + 1) + o.r * o.topk * (m.in_features + m.out_features) + o.r * m.out_features
    step += sum(o.r * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))
    dropout = dropout_per_token(arch, names, names) if o.vblora_dropout > 0 else 0
    return step, o.r * len(names) + dropout


def adaptation(spec, options) -> Adaptation:
    step, token = saved(spec, options)
    return Adaptation(products={n: products(spec.arch.by_name[n], options.r) for n in TUNER.targets(spec, options)},
                      saved_per_step=step, saved_per_token=token)


def make_config(spec, options):
    from peft import VBLoRAConfig

    o = resolved(spec, options)
    return peft_config(VBLoRAConfig, r=o.r, num_vectors=o.num_vectors, vector_length=o.vector_length, topk=o.topk,
                       vblora_dropout=o.vblora_dropout, init_vector_bank_bound=o.init_vector_bank_bound,
                       init_logits_std=o.init_logits_std, fan_in_fan_out=TUNER.conv1d_targets(spec, o),
                       **TUNER.peft_kwargs(spec, o))


def apply(model, spec, options):
    from peft import get_peft_model

    return get_peft_model(model, make_config(spec, options))


METHOD = Method(
    name="vblora", title="VB-LoRA", where="linear weights (LoRA factors assembled from one shared vector bank)",
    explanation="LoRA whose factors are not stored: every piece of them is a softmax-weighted mix of a few vectors "
                "picked from one small bank shared by all layers. It trains the bank and, per layer, the logits "
                "that pick and weigh the vectors.",
    when_to_use="When the saved adapter must be tiny (the paper saves only the top-k picks and weights); the "
                "trained count is larger than the saved one, since every logit trains.",
    default_lr=1e-3, options_type=VBLoRAOptions, mergeable=True,
    merge_reason="The assembled B·A has the shape of W, so it folds into W: zero inference overhead, and the bank "
                 "is no longer needed.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply, validate=make_config,
    peft_type="VBLORA", artifact="VB-LoRA adapter", in_default_race=False,
    meta_forward_refusal="VB-LoRA's forward checks its logits for infinities, which meta tensors cannot answer "
                         "(tests/test_peft_tuners_extra.py counts its FLOPs on real tensors)",
    literature=("Li et al. 2024 (VB-LoRA, abstract) claim competitive or superior performance to state-of-the-art "
                "PEFT methods, and that fine-tuning Llama2-13B it stores 0.4% of LoRA's parameters yet achieves "
                "superior results.",))
