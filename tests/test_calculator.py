"""The calculator's formulas equal real builds: PEFT's parameter counts and torch's FLOP counter."""

import re
import warnings

import pytest
import torch
from conftest import shallow
from torch.utils.flop_counter import FlopCounterMode

from explorer import calculator
from explorer.calculator import exact
from explorer.costs import specs
from explorer.costs.flops import count_flops
from explorer.costs.textbook import CLAIMS, TEXTBOOK_MODEL
from explorer.errors import ExplorerError
from explorer.methods import METHODS

CATALOG = specs.catalog_names()
# FLOP checks cover one model per family: Llama with GQA + tied embeddings (SmolLM2), biases (Qwen2.5),
# head_dim != d/h and four norms (Gemma-2), fused projections (Phi-3), Conv1D (GPT-2). MoE models (top-k
# routing through transformers' batched_mm) are checked in tests/test_any_model.py.


def test_catalog_has_the_models_the_issue_names():
    for name in ["llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b",
                 "mistral-7b", "mixtral-8x7b", "qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-72b", "gemma-2-2b",
                 "gemma-2-9b", "phi-3-mini", "smollm2-135m", "smollm2-360m", "smollm2-1.7b", "gpt2"]:
        assert name in CATALOG


@pytest.mark.parametrize("model", CATALOG)
def test_total_parameters_formula_equals_meta_model(model):
    spec = specs.catalog()[model]
    assert spec.arch.total_params() == exact.count_parameters(specs.meta_model(spec))[1]


# PEFT itself refuses LoRA's defaults here (all-linear becomes LoRA on the fused experts, which refuses dropout);
# tests/test_any_model.py checks that the calculator refuses them in PEFT's words, and counts them with dropout 0.
PEFT_REFUSES_DEFAULTS = {("deepseek-v2-lite", method) for method in ("lora", "dora", "qlora", "loraplus")}
# PEFT has no layer for GPT-2's Conv1D in these tuners (Method.conv1d_layer): the method refuses GPT-2 in one line
# instead, which test_parameter_formula_equals_peft checks in its words.
NO_CONV1D_LAYER = {name for name, method in METHODS.items() if not method.conv1d_layer}


# PEFT builds each catalog model with two of its blocks (same widths, heads, vocabulary; conftest.shallow): a
# count is a sum over blocks, and two blocks hold every kind of block the catalog has (DeepSeek-V2-Lite's dense
# first block and MoE second, gpt-oss's full and sliding attention). Full depth: the formula is the same code at
# another depth, and test_total_parameters_formula_equals_meta_model checks every model's full depth.
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("model", CATALOG)
def test_parameter_formula_equals_peft(model, method):
    if (model, method) in PEFT_REFUSES_DEFAULTS:
        pytest.skip("PEFT refuses these defaults on this model (see tests/test_any_model.py)")
    spec = shallow(model, 2)
    if model == "gpt2" and method in NO_CONV1D_LAYER:
        with pytest.raises(ExplorerError, match=r"^PEFT's .* has no layer for transformers' Conv1D [^\n]*$"):
            calculator.calculate(spec, method)
        return
    refusal = METHODS[method].model_refusal(spec)
    if refusal:  # PEFT has no build of this tuner for this architecture (Method.model_refusal): one line instead
        with pytest.raises(ExplorerError, match=f"^{re.escape(refusal)}$"):
            calculator.calculate(spec, method)
        return
    result = calculator.calculate(spec, method)
    assert result.exact_counts == (result.trainable_formula, result.total_params_with_method)
    assert result.agrees


@pytest.mark.parametrize("method, options", [
    ("lora", {"r": 3, "target_preset": "q,v", "use_rslora": True}),
    ("lora", {"r": 16, "target_preset": "custom", "target_modules": "o_proj,down_proj,lm_head"}),
    ("dora", {"r": 4, "target_preset": "attention"}),
    ("prefix", {"num_virtual_tokens": 7, "prefix_projection": True, "encoder_hidden_size": 33}),
    ("adapter", {"bottleneck_dim": 5, "after_attention": False}),
    ("head", {"head_type": "classifier", "num_classes": 3}),
    ("ia3", {"target_modules": "q_proj,up_proj", "feedforward_modules": "up_proj"}),
    ("head", {"head_type": "embedding", "embedding_dim": 17}),
    ("pissa", {"r": 5, "target_preset": "q,v"}),
    ("loraplus", {"r": 2, "target_preset": "attention", "loraplus_lr_ratio": 4}),
    ("vera", {"r": 16, "target_preset": "q,v"}),
    ("vera", {"r": 7, "target_preset": "custom", "target_modules": "o_proj,down_proj"}),
    ("ln_tuning", {"target_modules": "norm"}),
    ("ln_tuning", {"target_modules": "post_attention_layernorm"}),
])
@pytest.mark.parametrize("model", ["smollm2-135m", "qwen2.5-0.5b", "gemma-2-2b"])
def test_non_default_options_match_peft(model, method, options):
    spec = specs.catalog()[model]
    result = calculator.calculate(spec, method, METHODS[method].parse_options(options))
    assert result.agrees, (result.exact_counts, result.trainable_formula)


def assert_matches_peft_and_flops(model_name: str, method: str, options: dict, flops: bool = True) -> None:
    """A method's formula equals PEFT's built count on a two-block copy of a catalog model, and (flops) its FLOP
    formula equals torch's counter on the meta device: the check the tuners' own test files run on options other
    than the defaults."""
    spec = shallow(model_name, 2)
    parsed = METHODS[method].parse_options(options)
    result = calculator.calculate(spec, method, parsed)
    assert result.agrees, (result.exact_counts, result.trainable_formula)
    if not flops:
        return
    adaptation = METHODS[method].adaptation(spec, parsed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = exact.build_on_meta(spec, method, parsed, attn_implementation="eager")
        assert measured_flops(built, 12) == count_flops(spec.arch, adaptation, 12)


def measured_flops(model, seq_len, training=True):
    """(forward, backward) FLOPs that torch counts for one real pass on the meta device."""
    model.train(training)
    ids = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
    mask = torch.ones(1, seq_len, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as forward:
        out = model(input_ids=ids, attention_mask=mask)
    if not training:
        return forward.get_total_flops(), None
    with FlopCounterMode(display=False) as backward:
        (out if isinstance(out, torch.Tensor) else out.logits).float().sum().backward()
    return forward.get_total_flops(), backward.get_total_flops()


# Every method on a Llama (SmolLM2) and on GPT-2; the shape-sensitive ones on the other families. Two layers
# of each (conftest.shallow): FLOPs are a sum over blocks, and two layers hold every kind of block these
# models have (Gemma-2 alternates sliding and global attention); test_parameter_formula_equals_peft and
# test_total_parameters_formula_equals_meta_model cover the full depth.
# Methods whose training forward reads a value (not only shapes), which tensors on the meta device do not have:
# their FLOPs are checked against torch's counter on real tensors in their own test file.
# (Method.meta_forward_refusal says why.)
META_FLOPS_IMPOSSIBLE = {name: method.meta_forward_refusal for name, method in METHODS.items()
                         if method.meta_forward_refusal}
FLOP_CASES = ([(model, method) for model in ("smollm2-135m", "gpt2") for method in METHODS
               if (model, method) not in {("gpt2", m) for m in NO_CONV1D_LAYER}]
              + [(model, method) for model in ("qwen2.5-0.5b", "gemma-2-2b", "phi-3-mini")
                 for method in ("lora", "dora", "ia3", "prefix", "adapter", "vera", "ln_tuning")])


@pytest.mark.parametrize("model_name, method", FLOP_CASES)
def test_flop_formula_equals_torch_flop_counter(model_name, method):
    if (model_name, method) == ("gpt2", "dora"):
        pytest.skip("PEFT's DoRA on GPT-2's Conv1D also back-propagates through its identity-matrix "
                    "product for mlp.c_proj; the formula does not model that quirk")
    if method in META_FLOPS_IMPOSSIBLE:
        pytest.skip(META_FLOPS_IMPOSSIBLE[method])
    spec = shallow(model_name, 2)
    options = METHODS[method].parse_options({})
    adaptation = METHODS[method].adaptation(spec, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = exact.build_on_meta(spec, method, options, attn_implementation="eager")
        for seq_len in (8, 24):
            assert measured_flops(model, seq_len) == count_flops(spec.arch, adaptation, seq_len)
        inference, _ = count_flops(spec.arch, adaptation, 8, training=False)
        assert measured_flops(model, 8, training=False)[0] == inference


@pytest.mark.parametrize("model_name, method, options", [
    ("smollm2-135m", "head", {"head_type": "classifier", "num_classes": 4}),
    ("gpt2", "head", {"head_type": "embedding", "embedding_dim": 32}),
    ("gemma-2-2b", "ln_tuning", {"target_modules": "post_attention_layernorm,norm"}),
    ("qwen2.5-0.5b", "ln_tuning", {"target_modules": "norm"}),
    ("phi-3-mini", "vera", {"r": 8, "target_preset": "q,v"}),
])
def test_flop_formula_equals_torch_flop_counter_with_other_options(model_name, method, options):
    spec = shallow(model_name, 2)
    parsed = METHODS[method].parse_options(options)
    adaptation = METHODS[method].adaptation(spec, parsed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = exact.build_on_meta(spec, method, parsed, attn_implementation="eager")
        assert measured_flops(model, 12) == count_flops(spec.arch, adaptation, 12)


def saved_buffers(model) -> int:
    """Entries of the buffers a state dict holds: a non-persistent buffer (OFT's triangle indices) is rebuilt from
    the config, never saved."""
    kept = {id(b): b.numel() for module in model.modules() for name, b in module._buffers.items()
            if b is not None and name not in module._non_persistent_buffers_set}
    return sum(kept.values())


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("model_name", ["smollm2-135m", "gpt2"])
def test_what_a_method_adds_untrained_equals_the_buffers_it_builds(model_name, method):
    """VeRA's shared random matrices (frozen buffers, not parameters) are shown apart; every other method adds
    none, and the test would catch one that starts to. (The shared matrices' sizes depend on the layers'
    widths, not the depth: two layers.)"""
    if model_name == "gpt2" and method in NO_CONV1D_LAYER:
        pytest.skip("PEFT has no layer for GPT-2's Conv1D in this tuner (test_parameter_formula_equals_peft)")
    spec = shallow(model_name, 2)
    options = METHODS[method].parse_options({})
    before = saved_buffers(specs.meta_model(spec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        after = saved_buffers(exact.build_on_meta(spec, method, options))
    assert after - before == sum(t.count for t in METHODS[method].frozen_terms(spec, options))


def test_vera_counts_out_plus_r_per_layer_and_shows_its_shared_matrices_frozen():
    spec = specs.catalog()["llama-2-7b"]
    result = calculator.from_request("llama-2-7b", "vera", {"r": "256", "target_modules": "q_proj,v_proj"})
    assert result.trainable_formula == 32 * 2 * (4096 + 256)
    out = result.as_json()
    assert [t["count"] for t in out["frozen_formula"]] == [256 * 4096, 4096 * 256]
    assert out["adapter_file_bytes"] == 4 * (32 * 2 * (4096 + 256) + 2 * 256 * 4096)
    assert result.training.weights_bytes - calculator.calculate(spec, "lora").training.weights_bytes == \
        4 * 2 * 256 * 4096  # the shared matrices are frozen float32 buffers


def test_lora_training_costs_two_forwards_full_costs_three():
    arch = specs.catalog()["llama-2-7b"].arch
    f_full, b_full = count_flops(arch, METHODS["full"].adaptation(None, None), 512)
    assert b_full == 2 * f_full
    spec = specs.catalog()["llama-2-7b"]
    f, b = count_flops(arch, METHODS["lora"].adaptation(spec, METHODS["lora"].parse_options({})), 512)
    assert 0.9 < b / f < 1.05


def test_textbook_claims_are_checked_against_exact_values():
    spec = specs.catalog()[TEXTBOOK_MODEL]
    exact_values = {}
    for claim in CLAIMS:
        result = calculator.calculate(spec, claim.method, METHODS[claim.method].parse_options(claim.options))
        exact_values[claim.key] = (result.trainable if claim.quantity == "params"
                                   else result.flops.inference_overhead_per_token_unmerged)
    assert exact_values["prompt"] == 81_920
    assert exact_values["prefix_164k"] == 5_242_880
    assert exact_values["ia3"] == 614_400
    assert exact_values["lora"] == 19_988_480
    assert exact_values["adapter"] == 33_820_672
    assert exact_values["adapter_flops"] == 67_108_864


@pytest.mark.parametrize("values, message", [
    ({"target_modules": "nothing_here"}, "no norm layer named nothing_here; its norm layers are: input_layernorm"),
    ({"target_modules": "q_proj"}, r"trains normalisation layers; model\.layers\.0\.self_attn\.q_proj is a Linear"),
])
def test_ln_tuning_trains_norm_layers_only_and_says_so_in_one_line(values, message):
    with pytest.raises(ExplorerError, match=message) as error:
        calculator.from_request("smollm2-135m", "ln_tuning", values, exact_mode="skip")
    assert "\n" not in str(error.value)


def test_ln_tuning_defaults_come_from_the_model_where_peft_has_no_table():
    """PEFT's table lacks Phi-3 and OLMo-2: the block's own norms and the final norm, read from the model."""
    for model, expected in (("phi-3-mini", ["input_layernorm", "post_attention_layernorm", "model.norm (final)"]),
                            ("olmo-2-7b", ["post_attention_layernorm", "post_feedforward_layernorm",
                                           "model.norm (final)"])):
        result = calculator.calculate(specs.catalog()[model], "ln_tuning", exact_mode="skip")
        assert [t.module for t in result.terms] == expected
        hidden = result.spec.arch.hidden
        assert result.trainable_formula == (2 * result.spec.arch.layers + 1) * hidden
