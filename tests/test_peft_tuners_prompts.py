"""P-tuning, Cartridge, LLaMA-Adapter (adaption prompt) and CPT as methods: formulas against PEFT's builds and torch's
FLOP counter at options other than the defaults (the defaults are in the registry-wide tests), the formulas written
out on Llama-2-7B, the one-line refusals, what p-tuning saves, and CPT's context, loss and FLOPs on real tensors
(its forward reads values). None of them merges."""

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
    with pytest.raises(ExplorerError, match="all 3 virtual tokens are frozen, so nothing would train"):
        calculator.from_request("smollm2-135m", "cartridge", {"num_virtual_tokens": 3, "num_frozen_tokens": 3},
                                exact_mode="skip")
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


@pytest.fixture(scope="module")
def pirate_batch(cache):
    from explorer.data import chat, sources

    tok = loading.load_fresh(TINY, precision="fp32").tokenizer
    encoded, _ = chat.encode_dataset(tok, sources.load_dataset("pirate")[0][:3], 64)
    return chat.collate(encoded, chat.pad_id(tok))


def cpt_on_tiny(tiny_spec, batch, n: int):
    from explorer.methods.base import TrainingData

    m = METHODS["cpt"]
    base = loading.load_fresh(TINY, precision="fp32").model
    base.set_attn_implementation("eager")  # the formulas count eager attention's two products
    return m.apply_for_training(base, tiny_spec, m.parse_options({"num_virtual_tokens": n}),
                                TrainingData(steps=1, batches=lambda k: [batch] * k))


def test_cpts_context_is_the_first_training_examples_typed_input_and_answer(tiny_spec, pirate_batch):
    model = cpt_on_tiny(tiny_spec, pirate_batch, 40)
    config = model.peft_config["default"]
    mask, labels = pirate_batch["attention_mask"][0].bool(), pirate_batch["labels"][0]
    first = pirate_batch["input_ids"][0][mask].tolist()
    n = min(40, len(first))
    assert config.cpt_token_ids[:n] == first[:n] and config.num_virtual_tokens == 40
    answers = (labels[mask] != -100).tolist()
    assert config.cpt_tokens_type_mask[:n] == [4 if a else 2 for a in answers[:n]]  # example 0: 4·0+4 and 4·0+2
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == METHODS["cpt"].trainable_formula(tiny_spec, METHODS["cpt"].parse_options(
        {"num_virtual_tokens": 40}))


def test_cpt_trains_on_peft_s_loss_over_the_context_s_answers_and_the_batch_s(tiny_spec, pirate_batch):
    """The method passes each batch token's type, so PEFT's CPT loss scores the batch's answers and the context's.
    64 tokens cut the context inside the second example's prompt (the first holds 57): without the types PEFT would
    then score the context's answers only."""
    model = cpt_on_tiny(tiny_spec, pirate_batch, 64)
    config = model.peft_config["default"]
    assert max(config.cpt_tokens_type_mask) == 4 * 1 + 2  # the second example, its input only
    with torch.no_grad():
        loss = float(METHODS["cpt"].training_loss(model, pirate_batch))
        logits = model(input_ids=pirate_batch["input_ids"], attention_mask=pirate_batch["attention_mask"]).logits
        untyped = float(model(**pirate_batch).loss)
    ids, types = torch.tensor(config.cpt_token_ids), torch.tensor(config.cpt_tokens_type_mask)
    context = torch.where(types % 4 == 0, ids, -100).expand(len(logits), -1)
    labels = torch.cat([context, pirate_batch["labels"]], dim=1)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 labels[:, 1:].reshape(-1), ignore_index=-100)
    assert bool((context != -100).any()) and abs(loss - float(expected)) < 1e-4
    assert abs(untyped - loss) > 1e-3


def test_cpt_flops_equal_torchs_counter_on_a_real_build(tiny_spec, pirate_batch):
    from test_peft_tuners_more import cpu_flops

    from explorer.costs.flops import count_flops

    model = cpt_on_tiny(tiny_spec, pirate_batch, 40).train()
    adaptation = METHODS["cpt"].adaptation(tiny_spec, METHODS["cpt"].parse_options({"num_virtual_tokens": 40}))
    for seq_len in (6, 11):
        assert cpu_flops(model, seq_len) == count_flops(tiny_spec.arch, adaptation, seq_len)


def test_a_cpt_context_without_an_answer_is_refused_in_one_line(tiny_spec, pirate_batch):
    with pytest.raises(ExplorerError, match=r"^CPT: the first 12 tokens of the training examples hold no answer, so "
                                            r"the context teaches nothing; raise num_virtual_tokens\.$"):
        cpt_on_tiny(tiny_spec, pirate_batch, 12)


def test_a_cartridge_started_from_the_training_data_is_the_base_model_having_read_it(tiny_spec, pirate_batch):
    """kv_init=training_data: the cache is the base model's own keys and values for the first training tokens, so
    before training the adapted model continues exactly as the base does after reading those tokens."""
    from explorer.methods.base import TrainingData

    m = METHODS["cartridge"]
    options = m.parse_options({"num_virtual_tokens": 9, "kv_init": "training_data"})
    base = loading.load_fresh(TINY, precision="fp32").model
    model = m.apply_for_training(base, tiny_spec, options, TrainingData(steps=1, batches=lambda k: [pirate_batch] * k))
    context = pirate_batch["input_ids"][:1, :9]
    follow = torch.tensor([[5, 17, 300, 42]])
    with torch.no_grad():
        adapted = model(input_ids=follow).logits
        with model.disable_adapter():
            read = model(input_ids=torch.cat([context, follow], dim=1)).logits[:, 9:]
    assert torch.allclose(adapted, read, atol=1e-5)
    assert "first training tokens" in m.recipe_refusal_for(options) and not m.recipe_refusal_for(m.parse_options({}))


@pytest.mark.parametrize("method, options", [
    ("ptuning", {"num_virtual_tokens": 4}), ("ptuning", {"encoder_reparameterization_type": "LSTM"}),
    ("cartridge", {"num_virtual_tokens": 6, "num_frozen_tokens": 2}), ("adaption_prompt", {"adapter_len": 3}),
    ("cpt", {"num_virtual_tokens": 5})])
def test_the_calculators_adapter_file_holds_what_peft_saves(cache, tiny_spec, tmp_path, method, options):
    """p-tuning saves only the soft prompt (not its encoder), Cartridge its frozen rows too: the Calculator's file size
    and an unmerged reload's extra weights count what PEFT writes."""
    from safetensors.torch import load_file

    m = METHODS[method]
    parsed = m.parse_options(options)
    m.apply(loading.load_fresh(TINY, precision="fp32").model, tiny_spec, parsed).save_pretrained(tmp_path)
    entries = sum(t.numel() for t in load_file(tmp_path / "adapter_model.safetensors").values())
    result = calculator.calculate(tiny_spec, method, parsed, exact_mode="skip")
    assert result.adapter_file_bytes == 4 * entries
    assert result.inference_bytes - result.kv_cache_bytes == result.training.weights_bytes + 2 * entries
