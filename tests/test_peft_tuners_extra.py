"""VB-LoRA, OSF and trainable tokens: formulas against PEFT's builds and torch's FLOP counter at options other than
the defaults (the defaults are in the registry-wide tests), VB-LoRA's FLOPs on real tensors (its training forward
asks its logits for infinities, which meta tensors cannot answer), the one-line refusals, merging, and the default
tokens of trainable tokens."""

import json
import warnings

import pytest
import torch
from conftest import TINY
from test_calculator import assert_matches_peft_and_flops

from explorer import calculator
from explorer.calculator import exact
from explorer.costs import specs
from explorer.costs.flops import count_flops
from explorer.errors import ExplorerError
from explorer.methods import METHODS
from explorer.models import loading
from explorer.models import specs as model_specs

OPTIONS = [
    ("vblora", {"r": 3, "num_vectors": 64, "vector_length": 64, "topk": 3, "target_preset": "q,v"}),
    ("osf", {"effective_rank": 0.25, "target_preset": "attention"}),
    ("osf", {"effective_rank": 100, "target_preset": "custom", "target_modules": "down_proj"}),
    ("trainable_tokens", {"token_indices": "5,6,7", "target_modules": "embed_tokens,lm_head"}),
]
# SmolLM2 ties its head to the embeddings (naming the head is refused there, below); Llama 2 does not
CASES = [(model, method, options) for model in ("smollm2-135m", "llama-2-7b") for method, options in OPTIONS
         if not (model == "smollm2-135m" and "lm_head" in options.get("target_modules", ""))]


@pytest.mark.parametrize("model, method, options", CASES)
def test_non_default_options_match_peft_and_torchs_flop_counter(model, method, options):
    assert_matches_peft_and_flops(model, method, options, flops=method != "vblora")  # VB-LoRA's: real tensors below


def small_vocabulary(name: str, layers: int = 2):
    """A catalog model cut to two blocks and a 512-token vocabulary: real tensors stay small, the blocks are the
    model's own (FLOPs are a sum over blocks, and the head's are vocab·width, which the formula reads)."""
    data = json.loads((specs.CATALOG_DIR / f"{name}.json").read_text())
    data.pop("_catalog")
    data["n_layer" if "n_layer" in data else "num_hidden_layers"] = layers
    data["vocab_size"] = 512
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        data.pop(key, None)
    return specs.spec_from_dict(data, f"{name}-small", "upload")


@pytest.mark.parametrize("model, options", [("smollm2-135m", {}), ("gpt2", {}), ("smollm2-135m", OPTIONS[0][1])])
def test_vblora_flops_equal_torchs_counter_on_real_tensors(model, options):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    spec = small_vocabulary(model)
    method = METHODS["vblora"]
    parsed = method.parse_options(options)
    torch.manual_seed(0)
    config = spec.config
    config._attn_implementation = "eager"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = method.apply(AutoModelForCausalLM.from_config(config), spec, parsed)
    assert exact.count_parameters(built)[0] == method.trainable_formula(spec, parsed)
    built.train()
    ids = torch.zeros(1, 10, dtype=torch.long)
    with FlopCounterMode(display=False) as forward:
        out = built(input_ids=ids)
    with FlopCounterMode(display=False) as backward:
        out.logits.sum().backward()
    assert (forward.get_total_flops(), backward.get_total_flops()) == count_flops(
        spec.arch, method.adaptation(spec, parsed), 10)


@pytest.mark.parametrize("method, values, message", [
    ("vblora", {"vector_length": "100"}, r"`in_features` 576 of .* must be divisible by `vector_length` 100; .* 192"),
    ("vblora", {"topk": "9", "num_vectors": "8"}, r"topk \(9\) must be at most num_vectors \(8\)"),
    ("osf", {"effective_rank": "0.001"}, r"effective_rank` should be a positive .* 0.001 of .* rounds down to none"),
    ("osf", {"effective_rank": "64.5"}, "effective_rank above 1 counts directions, so it is a whole number"),
    ("osf", {"target_preset": "all-linear"}, None),
    ("trainable_tokens", {"token_indices": "49152"}, "vocabulary has ids 0 to 49151; 49152 is not one of them"),
    ("trainable_tokens", {"token_indices": "5 x"}, "token ids separated by commas or spaces, got '5 x'"),
    ("trainable_tokens", {"target_modules": "q_proj"}, r"train rows of the embeddings .*\.q_proj is a Linear"),
    ("trainable_tokens", {"target_modules": "embed_tokens,lm_head"}, "ties lm_head to model.embed_tokens: .* only"),
])
def test_what_peft_would_fail_on_is_refused_in_one_line(method, values, message):
    if message is None:  # GPT-2's Conv1D: OSF has no layer for it
        with pytest.raises(ExplorerError, match="PEFT's OSF has no layer for transformers' Conv1D") as error:
            calculator.from_request("gpt2", method, values, exact_mode="skip")
    else:
        with pytest.raises(ExplorerError, match=message) as error:
            calculator.from_request("smollm2-135m", method, values, exact_mode="skip")
    assert "\n" not in str(error.value)


def test_trainable_tokens_default_to_the_chat_templates_tokens_or_the_configs():
    """The tiny model's template (SmolLM2's ChatML) writes <|im_start|>, the role names, a newline and <|im_end|>;
    a catalog model has no tokenizer here: its config's bos and eos."""
    tiny = calculator.from_request(TINY, "trainable_tokens", {}, exact_mode="compute")
    assert tiny.agrees and tiny.trainable_formula == 7 * 32
    assert tiny.terms[0].module == "model.embed_tokens (tied to the LM head)"
    assert "<|im_start|> system Ċ <|im_end|> user ass istant" in tiny.terms[0].expression
    llama = calculator.from_request("llama-2-7b", "trainable_tokens", {}, exact_mode="skip")
    assert llama.trainable_formula == 2 * 4096 and "bos/eos/pad" in llama.terms[0].expression


@pytest.mark.parametrize("method", ["vblora", "osf", "trainable_tokens"])
def test_a_moved_adapter_merges_to_the_logits_it_adapts_to(cache, method):
    """merge_and_unload (what Compare's merged model and the GGUF export run) gives the adapter's logits; trainable
    tokens write their rows into the embedding matrix the tiny model shares with its head, which stays shared."""
    m = METHODS[method]
    loaded = loading.load_fresh(TINY, precision="fp32")
    model = m.apply(loaded.model, model_specs.resolve(TINY), m.parse_options({}))
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: every trainable tensor moved off its start
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    ids = torch.tensor([[1, 5, 9, 14, 3, 7, 2]])
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
        merged_model = model.merge_and_unload()
        merged = merged_model(input_ids=ids).logits
    assert float((adapted - merged).abs().max()) < 1e-4 * max(1.0, float(adapted.abs().max()) / 10)
    assert not torch.allclose(adapted, plain, atol=1e-4), "the moved adapter changes the logits"
    assert type(merged_model).__name__ == "LlamaForCausalLM"
    assert merged_model.get_input_embeddings().weight is merged_model.get_output_embeddings().weight, "still tied"
