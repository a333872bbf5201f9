"""P-tuning, Cartridge and LLaMA-Adapter (adaption prompt) as methods: formulas against PEFT's builds and torch's FLOP
counter at options other than the defaults (the defaults are in the registry-wide tests), the formulas written out on
Llama-2-7B, the one-line refusals, and what each saves."""

import pytest
import torch
from conftest import TINY, shallow
from test_calculator import assert_matches_peft_and_flops

from explorer import calculator
from explorer.errors import ExplorerError
from explorer.methods import METHODS
from explorer.models import loading
from explorer.models import specs as model_specs

OPTIONS = [
    ("ptuning", {"encoder_reparameterization_type": "LSTM", "encoder_hidden_size": 40, "encoder_num_layers": 3,
                 "num_virtual_tokens": 7, "encoder_dropout": 0.1}),
    ("ptuning", {"encoder_hidden_size": 33, "num_virtual_tokens": 3}),
    ("cartridge", {"num_virtual_tokens": 5, "num_frozen_tokens": 0}),
    ("adaption_prompt", {"adapter_len": 3, "adapter_layers": 1}),
]


@pytest.mark.parametrize("method, options", OPTIONS)
@pytest.mark.parametrize("model", ["smollm2-135m", "qwen2.5-0.5b"])
def test_non_default_options_match_peft_and_torchs_flop_counter(model, method, options):
    if METHODS[method].model_refusal(shallow(model, 2)):
        model = "mistral-7b"  # LLaMA-Adapter: no Qwen2 in PEFT; Mistral's grouped-query attention instead
    assert_matches_peft_and_flops(model, method, options)


def test_the_formulas_written_out_on_llama_2_7b():
    d = 4096
    mlp = calculator.from_request("llama-2-7b", "ptuning", {}, exact_mode="skip")
    assert mlp.trainable_formula == 20 * d + 3 * (d * d + d)  # embedding, then d→d→d→d (h = d by default)
    lstm = calculator.from_request("llama-2-7b", "ptuning", {"encoder_reparameterization_type": "LSTM",
                                                             "encoder_hidden_size": "512"}, exact_mode="skip")
    h = 512
    assert [t.count for t in lstm.terms] == [20 * d, 2 * (4 * h * (d + h) + 8 * h), 2 * (4 * h * 3 * h + 8 * h),
                                             2 * h * 2 * h + 2 * h, 2 * h * d + d]
    # once trained only the soft prompt is used: prompt tuning's forward on the same 20 tokens, plus the encoder
    prompt = calculator.from_request("llama-2-7b", "prompt", {}, exact_mode="skip")
    encoder = 2 * 20 * 3 * d * d
    assert mlp.flops.forward_per_token * 512 == prompt.flops.forward_per_token * 512 + encoder
    cartridge = calculator.from_request("llama-2-7b", "cartridge", {}, exact_mode="skip")
    assert cartridge.trainable_formula == (20 - 1) * 32 * 2 * d  # no grouped-query attention: kv width = d
    assert cartridge.total_params_with_method == cartridge.total_params + 20 * 32 * 2 * d  # the frozen row counts
    prefix = calculator.from_request("llama-2-7b", "prefix", {}, exact_mode="skip")
    assert cartridge.flops.train_per_token == prefix.flops.train_per_token  # prefix tuning's cost without its MLP
    adapter = calculator.from_request("llama-2-7b", "adaption_prompt", {"adapter_layers": "30"}, exact_mode="skip")
    assert adapter.trainable_formula == 30 * (10 * d + 1)  # the paper's 10 prompts in the top 30 of 32 layers
    # per token and adapted layer, unmerged: the query again (q_proj and the unused v_proj), scores and weighted sum
    # over 10 keys, and the output projection; the prompts' keys and values once per forward
    per_layer = 2 * d * d + 2 * d * d + 2 * (2 * 10 * d) + 2 * d * d
    seq = adapter.settings.seq_len
    assert adapter.flops.inference_overhead_per_token_unmerged * seq == 30 * (per_layer * seq + 2 * 2 * 10 * d * d)


@pytest.mark.parametrize("method, values, message", [
    ("ptuning", {"encoder_num_layers": "3"}, "PEFT's MLP always has three linear layers"),
    ("cartridge", {"num_virtual_tokens": "4", "num_frozen_tokens": "5"}, r"num_frozen_tokens \(5\) must be at most"),
    ("adaption_prompt", {"adapter_layers": "31"}, r"adapter_layers \(31\) is more than this model's 30 blocks"),
])
def test_bad_options_are_refused_in_one_line(method, values, message):
    with pytest.raises(ExplorerError, match=message) as error:
        calculator.from_request("smollm2-135m", method, values, exact_mode="skip")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("model", ["qwen2.5-0.5b", "gemma-2-2b", "phi-3-mini"])
def test_llama_adapter_refuses_what_peft_has_no_attention_layout_for(model):
    with pytest.raises(ExplorerError, match=r"^PEFT's adaption prompt \(LLaMA-Adapter\) knows Llama, Mistral and "
                                            r"GPT-2 attention only; this model's type is \w+\.$"):
        calculator.from_request(model, "adaption_prompt", {}, exact_mode="skip")


def test_a_cartridge_with_every_token_frozen_is_refused_before_training():
    m = METHODS["cartridge"]
    options = m.parse_options({"num_virtual_tokens": 3, "num_frozen_tokens": 3})
    assert calculator.from_request("smollm2-135m", "cartridge", {"num_virtual_tokens": 3, "num_frozen_tokens": 3},
                                   exact_mode="skip").trainable_formula == 0
    with pytest.raises(ExplorerError, match="all 3 virtual tokens are frozen, so nothing would train"):
        m.check_training(options)


@pytest.fixture(scope="module")
def tiny_spec(cache):
    return model_specs.resolve(TINY)


def test_p_tuning_saves_the_soft_prompt_its_encoder_makes_not_the_encoder(cache, tiny_spec, tmp_path):
    from safetensors.torch import load_file

    m = METHODS["ptuning"]
    options = m.parse_options({"num_virtual_tokens": 4})
    model = m.apply(loading.load_fresh(TINY, precision="fp32").model, tiny_spec, options)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert list(saved) == ["prompt_embeddings"]
    encoder = model.prompt_encoder["default"]
    with torch.no_grad():
        assert torch.allclose(saved["prompt_embeddings"], encoder(torch.arange(4)), atol=1e-6)
    assert saved["prompt_embeddings"].numel() < m.trainable_formula(tiny_spec, options)
