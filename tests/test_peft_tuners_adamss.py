"""GLoRA, DEFT and PSOFT as methods: formulas against PEFT's builds and torch's FLOP counter at options other than
the defaults (the defaults are in the registry-wide tests), the formulas written out on Llama-2-7B, the one-line
refusals, and each adapter merging to the logits it adapts to.

AdaMSS (PEFT's fourth tuner of this group) is not a method: each layer's build clusters the real weights' singular
vectors with scikit-learn's KMeans (peft/tuners/adamss/utils.py, clustering_Z: ``VT.detach().cpu().numpy()``), which
no meta-device build can do, so the Calculator cannot count it exactly on a catalog model; and with subspace_rank > 1
or use_dynamic_rank its count depends on the clusters found (layer.py: ``actual_rank = min(len(seg_indices),
subspace_rank)``), not on the architecture alone."""

import pytest
from conftest import TINY
from test_peft_tuners_more import assert_merges_to_the_logits_it_adapts_to
from test_calculator import assert_matches_peft_and_flops

from explorer import calculator
from explorer.errors import ExplorerError
from explorer.models import specs as model_specs

OPTIONS = [
    ("glora", {"r": 3, "config_A_B": "vector", "config_C": "vector", "config_D_E": "vector",
               "target_preset": "attention"}),
    ("glora", {"config_A_B": "none", "config_C": "lora", "config_D_E": "none", "target_preset": "q,v"}),
    ("deft", {"r": 5, "decomposition_method": "qr", "alpha": 16, "target_preset": "attention"}),
    ("deft", {"r": 300, "para": True, "target_preset": "q,v"}),  # r capped at k_proj's 192 / Qwen's 128 outputs
    ("psoft", {"r": 12, "psoft_orth": False, "psoft_mag_a": False, "target_preset": "attention"}),
    ("psoft", {"r": 9, "use_cayley_neumann": True, "num_cayley_neumann_terms": 6, "psoft_mag_b": False,
               "target_preset": "q,v"}),
    ("psoft", {"r": 6, "psoft_svd": "lowrank", "ab_svd_init": "pissa_init", "target_preset": "q,v"}),
    ("psoft", {"r": 4, "use_cayley_neumann": True, "num_cayley_neumann_terms": 3, "target_preset": "custom",
               "target_modules": "down_proj"}),
]


@pytest.mark.parametrize("method, options", OPTIONS)
@pytest.mark.parametrize("model", ["smollm2-135m", "qwen2.5-0.5b"])
def test_non_default_options_match_peft_and_torchs_flop_counter(model, method, options):
    if (method, options.get("config_A_B")) == ("glora", "none") and model == "smollm2-135m":
        pytest.skip("SmolLM2's projections have no bias: nothing would train (the refusal is tested below)")
    assert_matches_peft_and_flops(model, method, options)


def test_deft_with_qr_on_gpt2_matches_peft_and_torchs_flop_counter():
    assert_matches_peft_and_flops("gpt2", "deft", {"decomposition_method": "qr", "r": 6})


def test_the_formulas_written_out_on_llama_2_7b():
    glora = calculator.from_request("llama-2-7b", "glora", {"target_modules": "q_proj,down_proj"}, exact_mode="skip")
    q, down = glora.terms  # no biases in Llama: A and B only, a rank-8 pair each
    assert q.count == 32 * 2 * 8 * (4096 + 4096) and down.count == 32 * 2 * 8 * (4096 + 11008)
    # C, D and E are zero buffers PEFT saves (no bias to correct): in + 2·out per layer
    assert sum(t.count for t in glora.frozen_terms) == 32 * ((4096 + 2 * 4096) + (11008 + 2 * 4096))
    deft = calculator.from_request("llama-2-7b", "deft", {"r": "16", "target_modules": "v_proj"}, exact_mode="skip")
    assert deft.trainable_formula == 32 * 16 * (4096 + 4096)  # LoRA's count at the same rank
    psoft = calculator.from_request("llama-2-7b", "psoft", {"target_preset": "all-linear"}, exact_mode="skip")
    # r 0 → PEFT's 32: 32·31/2 Cayley entries + two scaling vectors of 32, whatever the layer's width
    assert psoft.trainable_formula == 32 * 7 * (32 * 31 // 2 + 32 + 32)
    assert psoft.terms[0].expression.startswith("32·31/2 (R) + 32 (mag_b) + 32 (mag_a)")
    # unmerged, GLoRA runs every adapted layer a second time: more overhead than DEFT's four rank-16 products
    assert glora.flops.inference_overhead_per_token_unmerged > deft.flops.inference_overhead_per_token_unmerged > 0
    assert glora.flops.inference_overhead_per_token_merged == 0


@pytest.mark.parametrize("method, values, message", [
    ("psoft", {"r": "200"}, r"r \(200\) must be at most .*k_proj has 576 → 192: use r ≤ 192"),
    ("glora", {"config_A_B": "none"}, r"config_A_B 'none' trains nothing on .*q_proj .*pick lora, vector or constant"),
    ("deft", {"target_modules": "lm_head"}, "adapts the blocks' linear layers; remove lm_head"),
])
def test_bad_options_are_refused_in_one_line(method, values, message):
    with pytest.raises(ExplorerError, match=message) as error:
        calculator.from_request("smollm2-135m", method, values, exact_mode="skip")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("method", ["glora", "psoft"])
def test_tuners_without_a_conv1d_layer_say_so_on_gpt2(method):
    with pytest.raises(ExplorerError, match=r"^PEFT's .* has no layer for transformers' Conv1D [^\n]*$"):
        calculator.from_request("gpt2", method, {}, exact_mode="skip")
    assert calculator.from_request("gpt2", "deft", {}, exact_mode="skip").trainable_formula > 0


def test_psoft_picks_the_tiny_models_width_and_peft_builds_it(cache):
    spec = model_specs.resolve(TINY)
    result = calculator.calculate(spec, "psoft")  # r 0 → 16, the tiny model's key projection width
    assert result.terms[0].expression.startswith("16·15/2 (R)") and result.agrees


@pytest.fixture(scope="module")
def tiny_spec(cache):
    return model_specs.resolve(TINY)


@pytest.mark.parametrize("method", ["glora", "deft", "psoft"])
def test_an_adapter_merges_to_the_logits_it_adapts_to(cache, tiny_spec, method):
    assert_merges_to_the_logits_it_adapts_to(tiny_spec, method)
