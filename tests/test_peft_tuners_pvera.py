"""PVeRA, TinyLoRA, FRoD and Lily as methods: formulas against PEFT's builds and torch's FLOP counter at options other
than the defaults (the defaults are in the registry-wide tests), FRoD against real CPU builds (its basis reads the
weights, which meta tensors lack), the formulas written out on Llama-2-7B, the one-line refusals, and each adapter
merging to the logits it adapts to (Lily cannot merge)."""

import copy
import warnings

import pytest
import torch
from conftest import TINY, shallow
from test_calculator import assert_matches_peft_and_flops, saved_buffers
from torch.utils.flop_counter import FlopCounterMode

from explorer import calculator
from explorer.calculator import exact
from explorer.costs.flops import count_flops
from explorer.errors import ExplorerError
from explorer.methods import METHODS
from explorer.models import loading
from explorer.models import specs as model_specs

OPTIONS = [
    ("pvera", {"r": 7, "d_initial": 0.5, "target_preset": "q,v"}),
    ("tinylora", {"r": 3, "u": 5, "weight_tying": 0.5, "target_preset": "attention"}),
    ("tinylora", {"r": 1, "u": 1, "weight_tying": 1.0}),  # u = 1: torch runs R = v·P element-wise
    ("lily", {"r": 5, "stride_A": 2, "num_B": 3, "target_preset": "custom", "target_modules": "q_proj,down_proj"}),
]


@pytest.mark.parametrize("method, options", OPTIONS)
def test_non_default_options_match_peft_and_torchs_flop_counter(method, options):
    assert_matches_peft_and_flops("qwen2.5-0.5b", method, options)


@pytest.mark.parametrize("options", [{"sparse_rate": 0.2, "target_preset": "q,v"}, {"sparse_rate": 0.0}])
def test_frod_counts_match_its_meta_build_at_other_options(options):
    assert_matches_peft_and_flops("qwen2.5-0.5b", "frod", options, flops=False)


def cpu_flops(model, seq_len):
    ids = torch.tensor([list(range(1, seq_len + 1))])
    with FlopCounterMode(display=False) as forward:
        out = model(input_ids=ids)
    with FlopCounterMode(display=False) as backward:
        out.logits.float().sum().backward()
    return forward.get_total_flops(), backward.get_total_flops()


def random_base(spec):
    """A real CPU model of the spec's shapes (random weights: FRoD's basis needs values, not trained ones)."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(spec.config)
    config._attn_implementation = "eager"  # the formulas count eager attention's two products
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="module")
def tiny_spec(cache):
    return model_specs.resolve(TINY)


@pytest.mark.parametrize("model_name, options", [
    (TINY, {}),
    (TINY, {"sparse_rate": 0.05, "target_preset": "custom", "target_modules": "k_proj,down_proj"}),
    ("gpt2", {"target_preset": "attention"}),  # Conv1D
])
def test_frod_real_build_equals_the_formula_its_meta_count_and_torchs_flop_counter(tiny_spec, model_name, options):
    """The calculator counts FRoD on the meta device with stand-ins for its value-reading steps
    (frod._shape_only_tuner): a real build of PEFT's FrodModel has the same parameters and saved buffers, and the
    FLOPs torch counts."""
    method = METHODS["frod"]
    spec = tiny_spec if model_name == TINY else shallow(model_name, 2)
    parsed = method.parse_options(options)
    if model_name == TINY:
        base = loading.load_fresh(TINY, precision="fp32").model
        base.set_attn_implementation("eager")  # the formulas count eager attention's two products
    else:
        base = random_base(spec)
    buffers_before = saved_buffers(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = method.apply(base, spec, parsed).train()
        meta = exact.build_on_meta(spec, "frod", parsed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == method.trainable_formula(spec, parsed) == exact.count_parameters(meta)[0]
    assert saved_buffers(model) - buffers_before == sum(t.count for t in method.frozen_terms(spec, parsed))
    adaptation = method.adaptation(spec, parsed)
    for seq_len in (5, 9):
        assert cpu_flops(model, seq_len) == count_flops(spec.arch, adaptation, seq_len)


def test_the_formulas_written_out_on_llama_2_7b():
    pvera = calculator.from_request("llama-2-7b", "pvera", {"r": "256", "target_modules": "q_proj,v_proj"},
                                    exact_mode="skip")
    assert pvera.trainable_formula == 32 * 2 * (4096 + 2 * 256)  # λ_b (out) + λ_d (a mean and a log-variance half)
    assert [t.count for t in pvera.frozen_terms] == [2 * 256 * 4096, 4096 * 256]
    tiny = calculator.from_request("llama-2-7b", "tinylora", {"u": "13", "weight_tying": "1", "r": "2",
                                                              "target_modules": "q_proj"}, exact_mode="skip")
    assert tiny.trainable_formula == 13  # the paper's title: one v of 13 numbers for the whole model
    assert sum(t.count for t in tiny.frozen_terms) == 32 * (2 * (4096 + 4096) + 13 * 2 * 2)
    untied = calculator.from_request("llama-2-7b", "tinylora", {"target_modules": "q_proj,down_proj"},
                                     exact_mode="skip")
    assert untied.trainable_formula == 64 * 64  # u = 64 per layer, 64 adapted layers
    lily = calculator.from_request("llama-2-7b", "lily", {"r": "32", "stride_A": "4", "num_B": "4",
                                                          "target_modules": "q_proj"}, exact_mode="skip")
    # 8 A's (32 layers / 4) of 32·4096, 4 B's of 32·4096 shared by all, one 32·4 router per layer
    assert lily.trainable_formula == 8 * 32 * 4096 + 4 * 32 * 4096 + 32 * 32 * 4
    assert lily.flops.inference_overhead_per_token_merged == lily.flops.inference_overhead_per_token_unmerged > 0
    frod = calculator.from_request("llama-2-7b", "frod", {"target_modules": "q_proj,down_proj"}, exact_mode="skip")
    q, down = frod.terms  # λ: in entries; S: ⌊in²·0.01⌋ positions
    assert q.count == 32 * (4096 + 167772) and down.count == 32 * (11008 + 1211760)
    assert [t.count for t in frod.frozen_terms] == [4096**2 + 2 * 167772 + 2, 11008**2 + 2 * 1211760 + 2]


@pytest.mark.parametrize("method, values, message", [
    ("lily", {}, r"^PEFT's Lily has no layer for transformers' Conv1D [^\n]*$"),
    ("lily", {"num_B": "1"}, r"num_B"),
    ("tinylora", {"weight_tying": "1.5"}, r"weight_tying"),
    ("pvera", {"target_modules": "lm_head"}, "adapts the blocks' linear layers; remove lm_head"),
    ("frod", {"target_modules": "lm_head"}, "adapts the blocks' linear layers; remove lm_head"),
])
def test_bad_options_are_refused_in_one_line(method, values, message):
    model = "gpt2" if method == "lily" and not values else "smollm2-135m"
    with pytest.raises(ExplorerError, match=message) as error:
        calculator.from_request(model, method, values, exact_mode="skip")
    assert "\n" not in str(error.value)


IDS = torch.tensor([[1, 5, 9, 14, 3, 7]])


def trained(method, tiny_spec):
    """The tiny model with the method applied and every trainable tensor moved off its start."""
    m = METHODS[method]
    base = loading.load_fresh(TINY, precision="fp32").model
    with torch.no_grad():
        base_logits = base(input_ids=IDS).logits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = m.apply(base, tiny_spec, m.parse_options({}))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval(), base_logits


@pytest.mark.parametrize("method", ["pvera", "tinylora", "frod"])
def test_an_adapter_merges_to_the_logits_it_adapts_to(cache, tiny_spec, method):
    model, base_logits = trained(method, tiny_spec)
    with torch.no_grad():
        adapted = model(input_ids=IDS).logits
        merged = model.merge_and_unload()
        assert type(merged).__name__ == "LlamaForCausalLM", "the merged model is a plain transformers model"
        assert (merged(input_ids=IDS).logits - adapted).abs().max() < 1e-4
    assert not torch.allclose(adapted, base_logits, atol=1e-4), "the adapter changes the logits"


def test_lily_cannot_merge_and_pvera_samples_only_while_training(cache, tiny_spec):
    lily, _ = trained("lily", tiny_spec)
    assert not METHODS["lily"].mergeable
    with pytest.raises(NotImplementedError):
        lily.merge_and_unload()
    pvera, _ = trained("pvera", tiny_spec)
    with torch.no_grad():
        assert torch.equal(pvera(input_ids=IDS).logits, pvera(input_ids=IDS).logits), "inference uses the mean"
        pvera.train()
        assert not torch.equal(pvera(input_ids=IDS).logits, pvera(input_ids=IDS).logits), "training samples"
