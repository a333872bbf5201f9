"""ShadowPEFT, BEFT, PEANuT and Super-Tuning as methods: formulas against PEFT's builds and torch's FLOP counter at
options other than the defaults (the defaults are in the registry-wide tests), the formulas written out on
Llama-2-7B, the one-line refusals, each adapter merging to the logits it adapts to where PEFT merges it (BEFT: PEFT
refuses on a layer without a bias, as its card says), and a trained ShadowPEFT run reloaded by Compare."""


import pytest
import torch
from conftest import TINY, train_run
from test_peft_tuners_more import assert_merges_to_the_logits_it_adapts_to, moved_off_its_start
from test_calculator import assert_matches_peft_and_flops

from explorer import calculator
from explorer.compare import variants as compare
from explorer.errors import ExplorerError
from explorer.methods import METHODS
from explorer.models import loading
from explorer.models import specs as model_specs

OPTIONS = [
    ("shadow", {"r": 4, "update_hidden_size": 6, "shadow_num_hidden_layers": 2, "shadow_intermediate_size": 100,
                "shadow_dropout": 0.0}),
    ("shadow", {"shadow_hidden_size": 192, "shadow_num_attention_heads": 6, "share_embeddings": False}),
    ("beft", {"target_preset": "attention", "init_weights": False}),
    ("beft", {"target_preset": "custom", "target_modules": "o_proj,down_proj"}),
    ("peanut", {"r": 5, "depth": 2, "act_fn": "gelu", "scaling": 0.5, "target_preset": "q,v"}),
    ("supertuning", {"sparsity": 0.95, "select_top": False, "r": 4, "lora_alpha": 8, "target_preset": "attention"}),
    ("supertuning", {"save_precomputed_indices": False, "target_preset": "custom", "target_modules": "down_proj"}),
]


@pytest.mark.parametrize("method, options", OPTIONS)
@pytest.mark.parametrize("model", ["smollm2-135m", "qwen2.5-0.5b"])
def test_non_default_options_match_peft_and_torchs_flop_counter(model, method, options):
    assert_matches_peft_and_flops(model, method, options)


def test_the_formulas_written_out_on_llama_2_7b():
    shadow = calculator.from_request("llama-2-7b", "shadow", {}, exact_mode="skip")
    backbone, inject, update = shadow.terms
    block = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096  # attention, MLP, two RMSNorms
    assert backbone.count == block + 4096  # one block and the final norm; the model's embeddings are shared
    assert backbone.expression == "1 block and final norm of this model (the model's embeddings shared) = 202,387,456"
    assert inject.count == 32 * 2 * 4096 * 8 and update.count == 32 * 2 * (2 * 4096 * 8 + 8 + 4096)
    narrow = calculator.from_request("llama-2-7b", "shadow", {"shadow_hidden_size": "1024"},
                                     exact_mode="skip")
    projection = next(t for t in narrow.terms if t.module == "shadow_projection")
    assert projection.count == 1024 * 4096 and "its own embeddings (32,768,000)" in narrow.terms[0].expression
    assert shadow.flops.inference_overhead_per_token_merged == shadow.flops.inference_overhead_per_token_unmerged > 0
    beft = calculator.from_request("llama-2-7b", "beft", {}, exact_mode="skip")
    assert beft.trainable_formula == 32 * 4096  # one bias vector on each value projection
    assert [t.module for t in beft.terms] == ["self_attn.v_proj"]
    peanut = calculator.from_request("llama-2-7b", "peanut", {"r": "8", "depth": "2",
                                                              "target_modules": "q_proj,down_proj"}, exact_mode="skip")
    q, down = peanut.terms  # A (out×r) and B (r×out) read W's out features; 2·depth hidden r×r layers
    assert q.count == down.count == 32 * (2 * 8 * 4096 + 2 * 2 * 8 * 8)
    assert q.expression.startswith("(2·8·4096 + 2·2·8²) × 32 layers")
    # unmerged, x·ΔWᵀ is a second dense product beside the frozen one; merged, nothing
    assert peanut.flops.inference_overhead_per_token_unmerged > 0 == peanut.flops.inference_overhead_per_token_merged
    sparse = calculator.from_request("llama-2-7b", "supertuning", {"target_modules": "q_proj"}, exact_mode="skip")
    assert sparse.trainable_formula == 32 * int(4096 * 4096 * (1 - 0.99)) == 32 * 167_772
    assert [t.count for t in sparse.frozen_terms] == [32 * 167_772]  # the int32 positions, saved
    supra = calculator.from_request("llama-2-7b", "supertuning", {"target_modules": "q_proj", "r": "8",
                                                                   "save_precomputed_indices": "false"},
                                    exact_mode="skip")
    assert supra.trainable_formula == 32 * (167_772 + 8 * (4096 + 4096)) and supra.frozen_terms == []


@pytest.mark.parametrize("method, values, message", [
    ("shadow", {"shadow_num_attention_heads": "4"},
     r"backbone's 4 attention heads cannot share this model's 3 key/value heads .*; use a multiple of 3\."),
    ("supertuning", {"sparsity": "0.999999"},
     r"leaves no trainable entry of .*\.k_proj's 576·192 weights; use a sparsity below 1 − 1/110,592"),
    ("supertuning", {"lora_alpha": "16"}, "PEFT: lora_alpha is set but r is None"),
    ("peanut", {"target_modules": "lm_head"}, "adapts the blocks' linear layers; remove lm_head"),
    ("beft", {"target_modules": "nope_proj"}, "no linear layer named nope_proj"),
])
def test_bad_options_are_refused_in_one_line(method, values, message):
    if "target_modules" in values:
        values = {**values, "target_preset": "custom"}
    with pytest.raises(ExplorerError, match=message) as error:
        calculator.from_request("smollm2-135m", method, values, exact_mode="skip")
    assert "\n" not in str(error.value)


def test_beft_targets_the_layer_that_makes_the_values_where_there_is_no_v_proj():
    assert [t.module for t in calculator.from_request("phi-3-mini", "beft", {}, exact_mode="skip").terms] == [
        "self_attn.qkv_proj"]
    assert [t.module for t in calculator.from_request("deepseek-v2-lite", "beft", {}, exact_mode="skip").terms] == [
        "self_attn.kv_b_proj"]


@pytest.fixture(scope="module")
def tiny_spec(cache):
    return model_specs.resolve(TINY)


@pytest.mark.parametrize("method, options", [("peanut", {}), ("supertuning", {"r": 2})])
def test_an_adapter_merges_to_the_logits_it_adapts_to(cache, tiny_spec, method, options):
    assert_merges_to_the_logits_it_adapts_to(tiny_spec, method, options)


def test_beft_is_not_offered_to_merge_because_peft_refuses_a_layer_without_a_bias(cache, tiny_spec):
    m = METHODS["beft"]
    assert not m.mergeable and "no bias" not in m.merge_reason and "has its own bias" in m.merge_reason
    base = loading.load_fresh(TINY, precision="fp32").model
    model = moved_off_its_start(m.apply(base, tiny_spec, m.parse_options({})))
    with pytest.raises(ValueError, match="Base layer has no bias, cannot merge bias adapter"):
        model.merge_and_unload()


def test_a_trained_shadow_run_reloads_in_compare_which_says_why_it_cannot_merge(cache):
    run_id = train_run("shadow", learning_rate=0.05)
    s = compare.session(run_id)
    seq = torch.tensor([[1, 5, 9, 14, 3, 7, 2]])
    assert not torch.allclose(compare.logits(s.adapted, seq), compare.logits(s.base, seq), atol=1e-4)
    result = compare.run_comparison(run_id, ["Ahoy, who goes there?"], 4, measure_latency=False)
    assert result["mergeable"] is False and result["outputs"]["merged"] is None
    assert result["not_mergeable_reason"] == METHODS["shadow"].merge_reason and "each input" in \
        result["not_mergeable_reason"]
    assert all(isinstance(t, str) for t in result["outputs"]["adapted"])
