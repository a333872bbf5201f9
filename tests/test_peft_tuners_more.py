"""SHiRA, C3A and RandLoRA as methods: formulas against PEFT's builds and torch's FLOP counter at options other than
the defaults (the defaults are in the registry-wide tests), SHiRA's FLOPs on a real CPU build (torch has no sparse
kernels on the meta device), the one-line refusals, and each adapter merging to the logits it adapts to."""


import pytest
import torch
from conftest import TINY
from test_calculator import assert_matches_peft_and_flops
from torch.utils.flop_counter import FlopCounterMode

from explorer import calculator
from explorer.costs.flops import count_flops
from explorer.errors import ExplorerError
from explorer.methods import METHODS, NOT_OFFERED
from explorer.models import loading
from explorer.models import specs as model_specs

OPTIONS = [
    ("c3a", {"block_size": 64, "init_weights": "true", "target_preset": "attention"}),
    ("randlora", {"r": 7, "sparse": True, "target_preset": "q,v"}),
    ("randlora", {"r": 1, "very_sparse": True, "target_preset": "custom", "target_modules": "k_proj"}),
]


@pytest.mark.parametrize("method, options", OPTIONS)
@pytest.mark.parametrize("model", ["smollm2-135m", "qwen2.5-0.5b"])
def test_non_default_options_match_peft_and_torchs_flop_counter(model, method, options):
    assert_matches_peft_and_flops(model, method, options)


def test_the_formulas_written_out_on_llama_2_7b():
    shira = calculator.from_request("llama-2-7b", "shira", {"r": "8", "target_modules": "q_proj"}, exact_mode="skip")
    assert shira.trainable_formula == 32 * 8 * (4096 + 4096)  # LoRA's count at the same r
    c3a = calculator.from_request("llama-2-7b", "c3a", {"target_modules": "q_proj,down_proj"}, exact_mode="skip")
    q, down = c3a.terms  # block_size 0: gcd(4096, 11008) = 256
    assert q.count == 32 * 4096 * 4096 // 256 and q.expression.startswith("(4096/256)·(4096/256)·256")
    assert down.count == 32 * 4096 * 11008 // 256
    rand = calculator.from_request("llama-2-7b", "randlora", {"target_modules": "q_proj,down_proj"}, exact_mode="skip")
    # m = 4096 for both: 128 bases of rank 32, each with 32 + 4096 trained scalings
    assert rand.trainable_formula == 2 * 32 * 128 * (32 + 4096)
    assert [t.count for t in rand.frozen_terms] == [32 * 4096, 11008 * 128 * 32]
    # RandLoRA runs x through full-rank bases unmerged: more than the frozen layer's own forward
    assert rand.flops.inference_overhead_per_token_unmerged > 0 == rand.flops.inference_overhead_per_token_merged


@pytest.mark.parametrize("method, values, message", [
    ("shira", {"r": "200"}, r"rank 200 would train .*\.k_proj, more than its 576·192 = 110,592 weights; use r ≤ 144"),
    ("c3a", {"block_size": "100"}, r"block size should be a factor of the input size; .*q_proj has 576 .* share 192"),
    ("shira", {"target_modules": "lm_head"}, "adapts the blocks' linear layers; remove lm_head"),
])
def test_bad_options_are_refused_in_one_line(method, values, message):
    with pytest.raises(ExplorerError, match=message) as error:
        calculator.from_request("smollm2-135m", method, values, exact_mode="skip")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("method", ["shira", "c3a"])
def test_tuners_without_a_conv1d_layer_say_so_on_gpt2(method):
    with pytest.raises(ExplorerError, match=r"^PEFT's .* has no layer for transformers' Conv1D [^\n]*$"):
        calculator.from_request("gpt2", method, {}, exact_mode="skip")
    assert calculator.from_request("gpt2", "randlora", {}, exact_mode="skip").trainable_formula > 0


def cpu_flops(model, seq_len):
    ids = torch.tensor([list(range(1, seq_len + 1))])
    with FlopCounterMode(display=False) as forward:
        out = model(input_ids=ids)
    with FlopCounterMode(display=False) as backward:
        out.logits.float().sum().backward()
    return forward.get_total_flops(), backward.get_total_flops()


@pytest.fixture(scope="module")
def tiny_spec(cache):
    return model_specs.resolve(TINY)


@pytest.mark.parametrize("options", [{}, {"r": 3, "target_preset": "q,v"}])
def test_shira_flops_equal_torchs_counter_on_a_real_build(cache, tiny_spec, options):
    method = METHODS["shira"]
    parsed = method.parse_options(options)
    base = loading.load_fresh(TINY, precision="fp32").model
    base.set_attn_implementation("eager")  # the formulas count eager attention's two products, as the meta builds
    model = method.apply(base, tiny_spec, parsed).train()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == method.trainable_formula(tiny_spec, parsed)
    adaptation = method.adaptation(tiny_spec, parsed)
    for seq_len in (6, 11):
        assert cpu_flops(model, seq_len) == count_flops(tiny_spec.arch, adaptation, seq_len)


def moved_off_its_start(model):
    torch.manual_seed(0)
    with torch.no_grad():  # a trained adapter: move every trainable tensor off its start
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def assert_merges_to_the_logits_it_adapts_to(spec, method: str, options: dict | None = None) -> None:
    """A method's adapter on the tiny model, moved off its start as training would, merges into a plain transformers
    model with the logits it had unmerged, and those differ from the base's: the check the tuners' test files share."""
    m = METHODS[method]
    base = loading.load_fresh(TINY, precision="fp32").model
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        model = moved_off_its_start(m.apply(base, spec, m.parse_options(options or {})))
        adapted = model(input_ids=ids).logits
        merged = model.merge_and_unload()
        assert type(merged).__name__ == "LlamaForCausalLM", "the merged model is a plain transformers model"
        assert (merged(input_ids=ids).logits - adapted).abs().max() < 1e-4
    assert not torch.allclose(adapted, base_logits, atol=1e-4), "the adapter changes the logits"


@pytest.mark.parametrize("method", ["shira", "c3a", "randlora"])
def test_an_adapter_merges_to_the_logits_it_adapts_to(cache, tiny_spec, method):
    assert_merges_to_the_logits_it_adapts_to(tiny_spec, method)


@pytest.mark.parametrize("name", sorted(NOT_OFFERED))
def test_a_method_not_offered_says_why_in_one_line_where_it_is_asked_for(name):
    from explorer.race import entrants

    title, why = NOT_OFFERED[name]
    assert name not in METHODS and why
    for ask in (lambda: calculator.from_request("llama-2-7b", name, {}, exact_mode="skip"),
                lambda: entrants.parse_spec(f"{name}:r=4")):
        with pytest.raises(ExplorerError, match=rf"{title} is not offered here: [^\n]+$"):
            ask()
