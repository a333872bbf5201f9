"""LLaMA-Adapter (Zhang et al. 2023, "LLaMA-Adapter: Efficient Fine-tuning of Language Models with Zero-init
Attention"), PEFT's adaption prompt (``peft.tuners.adaption_prompt``).

In each of the top adapter_layers blocks, adapter_len learned prompt vectors (width d, the model's hidden size) are
projected by the block's own frozen key and value projections, every token's query attends to them in a separate
softmax, and the result is multiplied by a gate that starts at zero (so training starts from the unchanged model),
projected by the frozen output projection and added to the attention's output (``AdaptedAttention.forward``).
Trained per adapted block: adapter_len·d prompt entries and one gate.

PEFT knows three attention layouts (``TRANSFORMERS_MODEL_CONFIG`` in its config.py): Llama's and Mistral's
(q/k/v/o projections) and GPT-2's (one fused c_attn, no output projection on the adapter's path). Any other model
type is refused by PEFT; here in one line (``model_refusal``).

FLOPs, as ``AdaptedAttention.forward`` runs them, per adapted block (q = heads·head_dim, kv = the key/value width):
once per forward, the prompt through the key and value projections, 2·K·d·kv each, whose input (the prompt) trains;
per token, the query recomputed (PEFT recomputes it, since the wrapped attention does not return it: q_proj again,
and v_proj too, whose output it does not use), the scores against the K prompt keys and their weighted sum,
2·K·q each, and the output projection of the result, 2·q·d. GPT-2: c_attn (3d wide) replaces the projections and
there is no output projection. Backward: the gate and the prompt train, so the scores, the weighted sum and the
output projection always pass gradients back; the recomputed query only when the block's input needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, Term

KNOWN = {"llama": "Llama", "mistral": "Mistral", "gpt2": "GPT-2"}  # PEFT's TRANSFORMERS_MODEL_CONFIG


@dataclass
class AdaptionPromptOptions:
    adapter_len: int = option(10, "Learned prompt vectors in each adapted block (the paper uses 10).", min=1,
                              max=1024)
    adapter_layers: int = option(0, "How many of the top blocks get a prompt; 0 = every block (the paper adapts "
                                 "the top 30 of LLaMA-7B's 32).", min=0, max=1024)


def model_refusal(spec) -> str:
    model_type = spec.config.model_type
    if model_type in KNOWN:
        return ""
    return (f"PEFT's adaption prompt (LLaMA-Adapter) knows Llama, Mistral and GPT-2 attention only; this model's "
            f"type is {model_type}.")


def layers_adapted(spec, o) -> list[int]:
    """The blocks PEFT adapts: the top adapter_layers (0 = all), in order."""
    refusal = model_refusal(spec)
    if refusal:
        raise ExplorerError(refusal)
    total = spec.arch.layers
    if o.adapter_layers > total:
        raise ExplorerError(f"Adaption prompt: adapter_layers ({o.adapter_layers}) is more than this model's "
                            f"{total} blocks.")
    count = o.adapter_layers or total
    return list(range(total - count, total))


def terms(spec, o) -> list[Term]:
    layers, d, k = len(layers_adapted(spec, o)), spec.arch.hidden, o.adapter_len
    return [Term("adaption prompts", layers * k * d, f"{k}·{d} × {layers} layers = {layers * k * d:,}"),
            Term("zero-init gates", layers, f"1 × {layers} layers = {layers}")]


def _module(spec, layer: int, local: str):
    arch = spec.arch
    return arch.by_name[f"{arch.layers_path}.{layer}.{local}"]


def products(spec, layer: int, o) -> tuple[str, tuple]:
    """(the linear the adapter's output joins, the matmuls it adds there)."""
    k, d = o.adapter_len, spec.arch.hidden
    if spec.config.model_type == "gpt2":
        fused = _module(spec, layer, "attn.c_attn")  # d → 3d: queries, keys and values at once
        width, q = fused.out_features, fused.out_features // 3
        return "attn.c_proj", (
            Product(2 * k * d * width, 2 * k * d * width, per_token=False),  # the prompt through c_attn
            Product(2 * d * width, 0, 2 * d * width),                        # the query recomputed
            Product(2 * k * q, 2 * k * q, 2 * k * q),                        # scores: the keys train
            Product(2 * k * q, 4 * k * q))                                   # weighted sum of the values
    q_proj, k_proj, v_proj = (_module(spec, layer, f"self_attn.{p}") for p in ("q_proj", "k_proj", "v_proj"))
    q, kv = q_proj.out_features, k_proj.out_features
    return "self_attn.o_proj", (
        Product(2 * 2 * k * d * kv, 2 * 2 * k * d * kv, per_token=False),  # the prompt's keys and values
        Product(2 * d * q, 0, 2 * d * q),                                  # the query recomputed
        Product(2 * d * v_proj.out_features),                              # values recomputed, unused: no backward
        Product(2 * k * q, 2 * k * q, 2 * k * q),                          # scores: the keys train
        Product(2 * k * q, 4 * k * q),                                     # weighted sum: gate and values train
        Product(2 * q * d, 2 * q * d))                                     # the output projection of the result


def query_width(spec, layer: int) -> int:
    """heads × head_dim of the queries PEFT recomputes: q_proj's output, or a third of GPT-2's fused c_attn."""
    if spec.config.model_type == "gpt2":
        return _module(spec, layer, "attn.c_attn").out_features // 3
    return _module(spec, layer, "self_attn.q_proj").out_features


def saved_per_token(spec, o) -> int:
    """What autograd keeps per token in each adapted block beyond the generic block (``AdaptedAttention.forward``
    and ``AdaptedAttentionGPT.forward``, peft/tuners/adaption_prompt/layer.py): the recomputed query (q wide,
    ``llama_compute_query_states`` / ``gpt2_compute_query_states`` in utils.py), kept by
    ``matmul(query_states, adapter_k.transpose(2, 3))`` for the prompt keys' gradient; the softmax's output
    (heads × adapter_len), kept by the softmax and by the gate's product for the gate's gradient; and the gated
    scores (heads × adapter_len), kept by ``matmul(scores, adapter_v)`` for the prompt values' gradient. The frozen
    output projection of the result keeps nothing (its input's gradient needs only its weight). Exact in fp32; in
    16-bit the softmax's output stays fp32 (``dtype=torch.float32``) and the gate's product keeps its 16-bit cast
    apart: 2 × heads × adapter_len elements more than counted (a fifth of this term at head_dim 64 and adapter_len
    10, under 1% of the activations). Measured with torch's saved-tensor hooks (tests/test_memory_saved.py)."""
    heads = spec.config.num_attention_heads
    return sum(query_width(spec, layer) + 2 * heads * o.adapter_len for layer in layers_adapted(spec, o))


def saved_per_sequence(spec, o) -> int:
    """Elements autograd keeps per sequence of the batch: the prompt's keys and values repeated to every sequence
    and query head (``.repeat(bsz, 1, 1, 1)`` and ``repeat_interleave`` in ``AdaptedAttention.forward``),
    adapter_len × q each: the values, kept by ``matmul(scores, adapter_v)`` for the gated scores' gradient, in every
    adapted block; the keys, kept by ``matmul(query_states, adapter_k...)`` for the query's gradient, only in the
    blocks above the lowest adapted one (the lowest one's input, from frozen blocks, needs no gradient)."""
    layers = layers_adapted(spec, o)
    return sum(o.adapter_len * query_width(spec, layer) * (1 + (layer > layers[0])) for layer in layers)


def adaptation(spec, o) -> Adaptation:
    """The adapter's matmuls on the linear its output joins, and its saved tensors per token and per sequence (the
    latter on the two-block SmolLM2 at 4 × 24 tokens 0.26 MiB of 7.1 (4%), at 4 × 96 1%; with adapter_len 40 at
    4 × 24, 15%)."""
    out = {}
    for layer in layers_adapted(spec, o):
        local, added = products(spec, layer, o)
        out[f"{spec.arch.layers_path}.{layer}.{local}"] = added
    return Adaptation(products=out, saved_per_token=saved_per_token(spec, o),
                      saved_per_sequence=saved_per_sequence(spec, o))


def validate(spec, o) -> None:
    layers_adapted(spec, o)


def apply(model, spec, o):
    from peft import AdaptionPromptConfig, get_peft_model

    layers = layers_adapted(spec, o)
    return get_peft_model(model, AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_len=o.adapter_len,
                                                      adapter_layers=len(layers)))


METHOD = Method(
    name="adaption_prompt", title="LLaMA-Adapter", where="attention (gated learned prompts in the top blocks)",
    explanation="Gives each of the top blocks a few learned prompt vectors that every token also attends to, "
                "through a gate that starts at zero, so training starts from the unchanged model and lets the "
                "prompts in gradually. PEFT calls it adaption prompt.",
    when_to_use="Instruction-following on a Llama, Mistral or GPT-2 model with very few trained parameters; the "
                "zero-start gate keeps early training stable.",
    default_lr=1e-2, options_type=AdaptionPromptOptions, mergeable=False,
    merge_reason="Cannot merge: its prompts add a second attention over extra vectors in every adapted block, "
                 "which no change of a weight can replace.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply, validate=validate,
    peft_type="ADAPTION_PROMPT", artifact="adaption prompt", in_default_race=False, model_refusal=model_refusal,
    literature=("Zhang et al. 2023 (LLaMA-Adapter, abstract) claim that with 1.2M learnable parameters on a frozen "
                "LLaMA 7B, trained in less than one hour on 8 A100 GPUs, it generates high-quality responses "
                "comparable to the fully fine-tuned 7B Alpaca.",))
