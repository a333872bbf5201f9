"""WaveFT, HiRA and Uni-LoRA as methods: formulas against PEFT's builds and torch's FLOP counter at options other
than the defaults (the defaults are in the registry-wide tests), WaveFT's FLOPs on a real CPU build (its forward
masks by value, which the meta device cannot), the one-line refusals, and each adapter merging to the logits it
adapts to."""

import pytest
from conftest import TINY
from test_peft_tuners_more import assert_merges_to_the_logits_it_adapts_to
from test_calculator import assert_matches_peft_and_flops
from test_peft_tuners_more import cpu_flops

from explorer import calculator
from explorer.costs.flops import count_flops
from explorer.errors import ExplorerError
from explorer.methods import METHODS, waveft
from explorer.models import loading
from explorer.models import specs as model_specs

OPTIONS = [
    ("hira", {"r": 5, "init_weights": "gaussian", "hira_dropout": 0.1, "target_preset": "q,v"}),
    ("hira", {"r": 3, "target_preset": "custom", "target_modules": "o_proj,down_proj"}),
    ("unilora", {"r": 7, "theta_d_length": 1000, "proj_seed": 3, "target_preset": "attention"}),
    ("waveft", {"n_frequency": 77, "wavelet_family": "sym4", "target_preset": "q,v"}),
]


@pytest.mark.parametrize("method, options", OPTIONS)
@pytest.mark.parametrize("model", ["smollm2-135m", "qwen2.5-0.5b"])
def test_non_default_options_match_peft_and_torchs_flop_counter(model, method, options):
    # WaveFT's FLOPs: on a real build below (its meta_forward_refusal)
    assert_matches_peft_and_flops(model, method, options, flops=not METHODS[method].meta_forward_refusal)


@pytest.fixture(scope="module")
def tiny_spec(cache):
    return model_specs.resolve(TINY)


@pytest.mark.parametrize("options", [
    {},
    {"wavelet_family": "coif2", "n_frequency": 100, "target_preset": "q,v"},  # a 12-tap filter: more padding
    {"wavelet_family": "db3", "init_weights": False},
    {"use_idwt": False},  # no transform: only the dense product
])
def test_waveft_flops_equal_torchs_counter_on_a_real_build(cache, tiny_spec, options):
    method = METHODS["waveft"]
    parsed = method.parse_options(options)
    base = loading.load_fresh(TINY, precision="fp32").model
    base.set_attn_implementation("eager")  # the formulas count eager attention's two products, as the meta builds
    model = method.apply(base, tiny_spec, parsed).train()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == method.trainable_formula(tiny_spec, parsed)
    adaptation = method.adaptation(tiny_spec, parsed)
    for seq_len in (6, 11):
        assert cpu_flops(model, seq_len) == count_flops(tiny_spec.arch, adaptation, seq_len)


def test_waveft_offers_the_wavelets_peft_can_reconstruct_with_their_filter_lengths():
    """Offered: each wavelet PEFT has a filter for whose padding (its reduction) matches that filter's length, so
    the reconstruction crops ΔW back to W's shape; PEFT's coif5 has 48 taps against a padding for 30."""
    from peft.tuners.waveft.constants import WAVELET_REDUCTIONS
    from peft.tuners.waveft.wavelet import _WAVELET_COEFFS, Wavelet

    taps = {name: len(Wavelet(name).rec_lo) for name in _WAVELET_COEFFS}
    assert waveft.FILTER_LENGTHS == {name: n for name, n in taps.items() if WAVELET_REDUCTIONS[name] == (n - 2, n - 2)}
    assert set(taps) - set(waveft.FILTER_LENGTHS) == {"coif5"}
    with pytest.raises(ExplorerError, match="wavelet_family must be one of"):
        METHODS["waveft"].parse_options({"wavelet_family": "coif5"})


def test_the_formulas_written_out_on_llama_2_7b():
    hira = calculator.from_request("llama-2-7b", "hira", {"target_modules": "q_proj"}, exact_mode="skip")
    assert hira.trainable_formula == 32 * 32 * (4096 + 4096)  # LoRA's count at the same r (32, PEFT's default)
    # Unmerged, per layer: a second full product per token, and B·A once per forward (spread over its tokens)
    per_token = 2 * 4096 * 4096 + 2 * 4096 * 32 * 4096 / hira.settings.seq_len
    assert hira.flops.inference_overhead_per_token_unmerged == pytest.approx(32 * per_token, rel=1e-12)
    assert hira.flops.inference_overhead_per_token_merged == 0
    wave = calculator.from_request("llama-2-7b", "waveft", {}, exact_mode="skip")
    assert wave.trainable_formula == 7 * 32 * 500  # all-linear: 7 layers a block, 500 coefficients each
    uni = calculator.from_request("llama-2-7b", "unilora", {}, exact_mode="skip")
    (term,) = uni.terms
    assert uni.trainable_formula == term.count == 256  # one vector for the whole model
    # θ_d reconstructs r·(in+out) of every adapted layer: 4·(4·(4096+4096) + 3·(4096+11008)) × 32 layers
    assert f"{4 * 32 * (4 * 8192 + 3 * 15104):,} LoRA entries" in term.expression
    assert "224 adapted layers" in term.module


@pytest.mark.parametrize("method, values, message", [
    ("waveft", {"n_frequency": "200000"}, r"n_frequency \(200000\) must be at most in·out .*k_proj has 576·192 = "
                                          r"110,592"),
    ("waveft", {"wavelet_family": "db11"}, "wavelet_family must be one of db1, "),
    ("unilora", {"theta_d_length": "0"}, "theta_d_length must be between 1 and"),
    ("hira", {"target_modules": "lm_head"}, "adapts the blocks' linear layers; remove lm_head"),
])
def test_bad_options_are_refused_in_one_line(method, values, message):
    with pytest.raises(ExplorerError, match=message) as error:
        calculator.from_request("smollm2-135m", method, values, exact_mode="skip")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("method", ["waveft", "hira", "unilora"])
def test_an_adapter_merges_to_the_logits_it_adapts_to(cache, tiny_spec, method):
    assert_merges_to_the_logits_it_adapts_to(tiny_spec, method)


def test_unilora_holds_its_index_and_scale_buffers_as_counted_in_training_memory(cache, tiny_spec):
    """Not saved (PEFT's save_indices=False), but held while training: an int64 index and a float32 scale per LoRA
    entry, counted as three float32's worth with the frozen weights."""
    m = METHODS["unilora"]
    options = m.parse_options({"r": 3, "target_preset": "attention"})
    model = m.apply(loading.load_fresh(TINY, precision="fp32").model, tiny_spec, options)
    held = {id(b): b.numel() * b.element_size() for name, b in model.named_buffers() if ".unilora_" in name}
    assert sum(held.values()) == 4 * m.adaptation(tiny_spec, options).vera_shared == 4 * 3 * 3 * 2 * (
        (32 + 32) + (32 + 16) + (32 + 16) + (32 + 32))  # 3·r·(in+out) per layer, 4 projections × 2 blocks
    assert m.frozen_terms(tiny_spec, options) == [], "none of it is saved"
