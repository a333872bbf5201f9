"""The activations term of the memory prediction equals what autograd keeps, method by method.

For every chat method of the registry (a new one is covered without an edit here), one training forward of a real
two-block copy of SmolLM2-135M (its widths, random weights, fp32, transformers' default sdpa attention) runs under
torch.autograd.graph.saved_tensors_hooks, which sees every tensor autograd saves for backward; the model's own
parameters and buffers are left out (they are the weights term), each storage is counted once. The prediction is
explorer.costs.memory's activations term plus its CPU dropout masks, less the logits' gradient (not a saved
tensor: it exists in backward only). Two sequence lengths, so a term per token and a term per forward (a copy of
W that a tuner builds and keeps) are both checked. Its vocabulary is cut to 4,096 (an embedding's rows change no
saved tensor but the logits, which the formula counts exactly), so each build takes a fraction of a second.
"""

import json
import warnings
import weakref

import pytest
import torch

from explorer.costs import memory, specs
from explorer.methods import METHODS

VOCAB, BATCH, LENGTHS = 4096, 4, (24, 96)  # the Fine-tune tab trains 4 × 96 tokens by default
TOLERANCE = 0.10  # the formula's share of what autograd keeps, without the logits: within ±10%


def small_smollm2():
    data = json.loads((specs.CATALOG_DIR / "smollm2-135m.json").read_text())
    data.pop("_catalog")
    data.update(num_hidden_layers=2, vocab_size=VOCAB)
    return specs.spec_from_dict(data, "smollm2-135m-2-layers", "upload")


SPEC = small_smollm2()


def chat_methods() -> list[str]:
    """Methods that train a chat model on a full-precision base (QLoRA's 4-bit base needs a quantized load; its
    adapter is LoRA's, checked as lora)."""
    out = []
    for name, method in METHODS.items():
        options = method.parse_options({"head_type": "lm"} if name == "head" else {})
        if method.data_kind(options) == "chat" and not method.quantized_base:
            out.append(name)
    return out


def saved_bytes(model, ids, mask=None) -> int:
    """Bytes of the distinct tensors autograd saves in one training forward with labels (the loss included) and
    still holds when it ends (what backward starts from: the peak), the model's parameters and buffers left out.
    A graph a tuner drops mid-forward (DoRA's detached B·A built from an identity) frees its saved tensors, and
    their addresses are reused: each saved tensor is followed by a weak reference and counted at the end."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    packed = []

    def pack(tensor):
        packed.append(weakref.ref(tensor))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids, attention_mask=torch.ones_like(ids) if mask is None else mask, labels=ids)
    seen = {}
    for ref in packed:
        tensor = ref()
        if tensor is None:
            continue
        if tensor.is_sparse:  # SHiRA's sparse update: its values and indices
            seen[id(tensor)] = tensor._values().nbytes + tensor._indices().nbytes
        elif tensor.untyped_storage().data_ptr() not in own:
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(seen.values())


def built(name: str, options):
    from transformers import AutoModelForCausalLM

    config = SPEC.config.__class__.from_dict(SPEC.config.to_dict())
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = METHODS[name].apply(AutoModelForCausalLM.from_config(config), SPEC, options)
    return model.train()


@pytest.mark.parametrize("name", chat_methods())
def test_the_activations_term_is_what_autograd_keeps(name):
    method = METHODS[name]
    options = method.parse_options({"head_type": "lm"} if name == "head" else {})
    model = built(name, options)
    adaptation = method.adaptation(SPEC, options)
    for length in LENGTHS:
        ids = torch.randint(0, VOCAB, (BATCH, length), generator=torch.Generator().manual_seed(length))
        measured = saved_bytes(model, ids)
        settings = memory.TrainSettings(batch_size=BATCH, seq_len=length, precision="fp32", padded=False)
        tokens = BATCH * (length + adaptation.prompt_tokens)
        predicted = (memory.activation_bytes(SPEC.arch, adaptation, settings)
                     + memory.cpu_dropout_mask_bytes(SPEC.arch, adaptation, settings) - tokens * VOCAB * 4)
        assert abs(predicted / measured - 1) <= TOLERANCE, (
            f"{name} at {BATCH}×{length} tokens: predicted {predicted / 2**20:.2f} MiB, autograd keeps "
            f"{measured / 2**20:.2f} MiB")


@pytest.mark.parametrize("name", ["full", "lora", "c3a", "prompt", "prefix", "ia3"])
def test_a_padded_batch_keeps_the_mask_and_the_repeated_keys_and_values(name):
    """The app's training pads each batch to its longest example: transformers then passes attention a mask, which
    it keeps with the keys and values repeated to every query head (TrainSettings.padded, the default)."""
    method = METHODS[name]
    options = method.parse_options({})
    model = built(name, options)
    length = LENGTHS[-1]
    ids = torch.randint(0, VOCAB, (BATCH, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    for row, real in enumerate((length, length - 16, length // 2, 20)):  # right-padded, as explorer.data.chat pads
        mask[row, real:] = 0
    adaptation = method.adaptation(SPEC, options)
    predicted = {}
    for padded in (False, True):
        settings = memory.TrainSettings(batch_size=BATCH, seq_len=length, precision="fp32", padded=padded)
        tokens = BATCH * (length + adaptation.prompt_tokens)
        predicted[padded] = (memory.activation_bytes(SPEC.arch, adaptation, settings)
                             + memory.cpu_dropout_mask_bytes(SPEC.arch, adaptation, settings) - tokens * VOCAB * 4)
    measured = saved_bytes(model, ids, mask)
    # prefix tuning's virtual keys make transformers pass a mask anyway: padding changes nothing there
    assert predicted[True] > predicted[False] or (adaptation.prefix_tokens and predicted[True] == predicted[False])
    assert abs(predicted[True] / measured - 1) <= TOLERANCE, (predicted, measured)


def test_llama_adapters_prompt_copies_per_sequence_are_counted():
    """LLaMA-Adapter repeats its prompt's keys and values to every sequence of the batch (Adaptation.saved_per_sequence):
    with a 40-token prompt at 4×24 tokens they are 13% of what autograd keeps, beyond the ±10% the test allows."""
    method = METHODS["adaption_prompt"]
    options = method.parse_options({"adapter_len": 40})
    adaptation = method.adaptation(SPEC, options)
    assert adaptation.saved_per_sequence > 0
    ids = torch.randint(0, VOCAB, (BATCH, 24), generator=torch.Generator().manual_seed(24))
    measured = saved_bytes(built("adaption_prompt", options), ids)
    settings = memory.TrainSettings(batch_size=BATCH, seq_len=24, precision="fp32", padded=False)
    predicted = (memory.activation_bytes(SPEC.arch, adaptation, settings)
                 + memory.cpu_dropout_mask_bytes(SPEC.arch, adaptation, settings) - BATCH * 24 * VOCAB * 4)
    assert abs(predicted / measured - 1) <= 0.02, (predicted, measured)
