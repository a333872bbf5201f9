"""PEFT's other tuners as methods (LoHa, LoKr, ...): formulas against PEFT's builds and torch's FLOP counter at
options other than the defaults (the defaults are in the registry-wide tests of tests/test_calculator.py), the
formula written out on one model, the one-line refusals, and a short trained run that merges to the logits it
adapts to (each method's loss falling is tests/test_training.py's registry-wide run)."""


import pytest
import torch
from conftest import train_run
from test_calculator import assert_matches_peft_and_flops, NO_CONV1D_LAYER

from explorer import calculator
from explorer.compare import variants as compare
from explorer.errors import ExplorerError
from explorer.methods import METHODS

NEW = ["loha"]

OPTIONS = [
    ("loha", {"r": 3, "alpha": 6, "target_preset": "q,v"}),
    ("loha", {"r": 16, "target_preset": "custom", "target_modules": "o_proj,down_proj", "rank_dropout": 0.1}),
    ("lokr", {"r": 2, "decompose_both": True, "target_preset": "attention"}),
    ("lokr", {"r": 64, "decompose_factor": 8, "target_preset": "custom", "target_modules": r"re:.*\.mlp\..*_proj"}),
    ("oft", {"oft_block_size": 0, "r": 7, "target_preset": "attention", "num_cayley_neumann_terms": 7}),
    ("oft", {"oft_block_size": 50, "block_share": True, "coft": True, "use_cayley_neumann": False}),
    ("boft", {"boft_block_size": 0, "boft_block_num": 8, "target_preset": "q,v"}),
    ("hra", {"r": 5, "apply_GS": True, "target_preset": "attention"}),
    ("fourierft", {"n_frequency": 3000, "scaling": 300, "target_preset": "q,v", "random_loc_seed": 1}),
    ("road", {"variant": "road_4", "group_size": 64, "target_preset": "attention"}),
    ("road", {"variant": "road_2", "target_preset": "custom", "target_modules": "down_proj"}),
    ("miss", {"r": 64, "init_weights": "bat", "target_preset": "q,v"}),
    ("freeze", {"freeze_trainable_layers": -1}),
    ("gralora", {"r": 64, "gralora_k": 4, "hybrid_r": 8, "target_preset": "q,v"}),
    ("delora", {"r": 3, "delora_lambda": 4, "module_dropout": 0.1, "target_preset": "attention"}),
    ("miss", {"r": 100, "init_weights": "mini", "mini_r": 64, "exclude_modules": "re:.*layers\\.1\\..*"}),
]


@pytest.mark.parametrize("method, options", OPTIONS)
@pytest.mark.parametrize("model", ["smollm2-135m", "qwen2.5-0.5b", "gemma-2-2b"])
def test_non_default_options_match_peft_and_torchs_flop_counter(model, method, options):
    assert_matches_peft_and_flops(model, method, options)


def test_the_formulas_written_out_on_llama_2_7b():
    loha = calculator.from_request("llama-2-7b", "loha", {"r": "8", "target_modules": "q_proj,v_proj"},
                                   exact_mode="skip")
    assert loha.trainable_formula == 32 * 2 * 2 * 8 * (4096 + 4096)
    assert [t.expression for t in loha.terms][0] == "2·8·(4096+4096) × 32 layers 0–31 = 4,194,304"
    # LoKr: 4096 = 64·64 both ways and 11008 = 86·128; r=8 < 64/2, so W2 is low-rank and W1 full
    lokr = calculator.from_request("llama-2-7b", "lokr", {"r": "8", "target_modules": "q_proj,down_proj"},
                                   exact_mode="skip")
    q, down = (t for t in lokr.terms)
    assert q.count == 32 * (64 * 64 + 8 * (64 + 64)) and q.expression.startswith("64·64 (W1) + 8·(64+64) (W2)")
    assert down.count == 32 * (64 * 86 + 8 * (64 + 128))
    # unmerged, both apply ΔW as a second dense product: the forward FLOPs of those layers double
    assert loha.flops.inference_overhead_per_token_unmerged > 0 == loha.flops.inference_overhead_per_token_merged


@pytest.mark.parametrize("method", sorted(NO_CONV1D_LAYER))
def test_tuners_without_a_conv1d_layer_say_so_in_one_line(method):
    with pytest.raises(ExplorerError, match="has no layer for transformers' Conv1D") as error:
        calculator.from_request("gpt2", method, {}, exact_mode="skip")
    assert "\n" not in str(error.value) and METHODS[method].title in str(error.value)


@pytest.mark.parametrize("method, values, message", [
    ("loha", {"target_modules": "lm_head"}, "adapts the blocks' linear layers; remove lm_head"),
    ("lokr", {"target_modules": "nope_proj"}, "no linear layer named nope_proj"),
    ("miss", {"r": "1000"}, r"`r` \(1000\) must be less than or equal to in_features \(576\)"),
    ("freeze", {"freeze_trainable_layers": "31"}, r"between 1 and 30 blocks .*this model has 30; got 31"),
    ("gralora", {"r": "30", "gralora_k": "4"}, "PEFT: r should be divisible by gralora_k, but got 30 and 4"),
    ("road", {"group_size": "100"}, r"divisible by group_size \(100\); model\.layers\.0\.self_attn\.q_proj has 576"),
    ("fourierft", {"n_frequency": "200000"}, r"n_frequency \(200000\) must be at most in·out .*k_proj has 576·192"),
])
def test_bad_targets_are_refused_in_one_line(method, values, message):
    with pytest.raises(ExplorerError, match=message) as error:
        calculator.from_request("smollm2-135m", method, values, exact_mode="skip")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("method", [m for m in NEW if METHODS[m].mergeable])
def test_a_trained_run_merges_to_the_logits_it_adapts_to(cache, method):
    run_id = train_run(method, learning_rate=0.05)
    s = compare.session(run_id)
    seq = torch.tensor([[1, 5, 9, 14, 3, 7, 2]])
    adapted, merged, base = (compare.logits(m, seq) for m in (s.adapted, s.merged, s.base))
    assert float((adapted - merged).abs().max()) < 1e-4 * max(1.0, float(adapted.abs().max()) / 10)
    assert not torch.allclose(adapted, base, atol=1e-4), "the trained adapter changes the logits"
    assert type(s.merged).__name__ == "LlamaForCausalLM", "the merged model is a plain transformers model"


def test_boft_refuses_what_peft_cannot_build_here_in_one_line():
    """A block size that does not divide a layer (PEFT would fail mid-build) and butterfly factors (CUDA only)."""
    with pytest.raises(ExplorerError, match=r"in_features \(576\) must be divisible by boft_block_size \(7\)"):
        calculator.from_request("smollm2-135m", "boft", {"boft_block_size": "7"}, exact_mode="skip")
    with pytest.raises(ExplorerError, match=r"butterfly factors .* only with its CUDA kernel fbd_cuda"):
        calculator.from_request("smollm2-135m", "boft", {"boft_n_butterfly_factor": "2"}, exact_mode="skip")


def test_freeze_tuning_counts_the_top_blocks_and_only_they_pay_backward():
    full_depth = calculator.from_request("llama-2-7b", "freeze", {"freeze_trainable_layers": "2"}, exact_mode="skip")
    block = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096  # attention, MLP, two RMSNorms
    assert full_depth.trainable_formula == 2 * block
    assert [t.expression for t in full_depth.terms] == [f"{block:,} × 2 = {2 * block:,}"]
    deeper = calculator.from_request("llama-2-7b", "freeze", {"freeze_trainable_layers": "8"}, exact_mode="skip")
    assert deeper.flops.train_per_token > full_depth.flops.train_per_token  # more blocks pay backward


def test_the_calculator_tab_builds_and_answers_for_every_new_method():
    """The UI lists methods from the registry: the tab's widgets build with the new methods' options (a slider
    never starts outside its range: the page would open on an error), and its handler answers each at its
    defaults (SmolLM2-135M: GPT-2's Conv1D is refused above)."""
    import dataclasses

    import gradio as gr

    from explorer.ui import calculator_tab

    from explorer.ui.widgets import widget_for

    with gr.Blocks():
        calculator_tab.create_calculator_tab()
        for method in METHODS.values():  # a slider must hold its default (OFT's r=0 gets a number box)
            for f in dataclasses.fields(method.options_type):
                widget = widget_for(f, f"check-{f.name}")
                if isinstance(widget, gr.Slider):
                    assert widget.minimum <= f.default <= widget.maximum, (method.name, f.name)
    for method in NEW:
        answer = calculator_tab._update(calculator_tab.calc_form("smollm2-135m", method))
        assert f"{METHODS[method].title} on smollm2-135m" in answer[0] and len(answer[1]) > 0, answer[0][:200]
