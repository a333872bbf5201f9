"""Any decoder model transformers builds: the derived table, the new catalog, PEFT's target rules, bad input.

PEFT's matching is compared with PEFT's own injection (get_peft_model on the meta-device model) for every
catalog model; FLOPs with torch's FlopCounterMode on each new architecture, cut to a few layers (the layers
cut away are copies of the ones kept: same kinds, same table)."""

import json
import re
import warnings

import pytest
import torch
from conftest import shallow

from explorer import calculator
from explorer.calculator import exact
from explorer.costs import specs
from explorer.costs.flops import count_flops
from explorer.errors import ExplorerError
from explorer.methods import METHODS
from explorer.methods.lora import peft_lora_config

CATALOG = specs.catalog_names()
NEW = ["qwen3-8b", "qwen3-30b-a3b", "llama-3.2-1b", "llama-3.2-3b", "gemma-3-4b", "gemma-3-27b", "smollm3-3b",
       "olmo-2-7b", "phi-4-mini", "granite-3.3-8b", "gpt-oss-20b", "deepseek-v2-lite"]


def published(text: str) -> tuple[float, int]:
    """'8.2B' -> (8.2e9, 1 decimal): the figure and the precision it was published with."""
    number = text.rstrip("B")
    return float(number) * 1e9, len(number.partition(".")[2])


@pytest.mark.parametrize("model", NEW)
def test_new_catalog_totals_equal_the_published_counts(model):
    entry = specs.catalog_entry(model)
    figure, decimals = published(entry["published_params"])
    total = specs.catalog_spec(model).arch.total_params()
    assert round(total / 1e9, decimals) == round(figure / 1e9, decimals), (total, entry["published_params"])
    assert entry["provenance"] and entry["published_params_source"]


def test_the_catalog_covers_the_architectures_the_issue_names():
    archs = {name: specs.catalog_spec(name).arch for name in NEW}
    assert any(a.windows.count(None) < a.layers for a in archs.values())               # sliding-window layers
    assert archs["deepseek-v2-lite"].moe(archs["deepseek-v2-lite"].main) == (64, 6)    # routed experts ...
    shared = [lin.name for lin in archs["deepseek-v2-lite"].main.linears]
    assert "mlp.shared_experts.down_proj" in shared                                    # ... and shared ones
    assert len(archs["deepseek-v2-lite"].blocks) == 2                                  # a dense first layer
    assert archs["gpt-oss-20b"].moe(archs["gpt-oss-20b"].main) == (32, 4)
    assert archs["qwen3-30b-a3b"].moe(archs["qwen3-30b-a3b"].main) == (128, 8)
    assert archs["qwen3-8b"].tied is False and archs["llama-3.2-1b"].tied is True
    assert archs["gemma-3-27b"].windows[:6] == (1024,) * 5 + (None,)


def peft_targets(spec, options):
    """The module and parameter names PEFT itself adapts when it builds LoRA on the meta-device model."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(specs.meta_model(spec), peft_lora_config(spec, options))
    tuner = model.base_model
    return sorted(tuner.targeted_module_names), sorted(tuner.targeted_parameter_names)


def our_targets(spec, options):
    from explorer.methods.lora import resolve_match

    found = resolve_match(spec.arch, options)
    return sorted(found.targets), sorted(name for name, _, _ in found.params)


def matching_cases(spec):
    """A list with exclusions and chosen layers, a regex, and PEFT's all-linear: few layers each, so
    PEFT's build stays quick even on a 126-layer model."""
    arch = spec.arch
    names = [lin.short for lin in arch.main.linears]
    first, last = names[0], names[-1]
    yield {"target_modules": f"{first},{last}", "layers_to_transform": "0,1",
           "exclude_modules": f"re:.*\\.1\\..*{re.escape(last)}"}
    yield {"target_modules": f"re:.*\\.{arch.layers - 1}\\..*({re.escape(first)}|{re.escape(last)})"}
    yield {"target_modules": "all-linear", "lora_dropout": 0,
           "exclude_modules": f"re:{re.escape(arch.layers_path)}\\.([1-9]\\d*)\\..*"}
    yield {"target_modules": first, "layers_to_transform": "1", "layers_pattern": arch.layers_path.rpartition(".")[2]}
    yield {"target_modules": "all-linear", "layers_to_transform": "1"}  # PEFT refuses layers with a string


@pytest.mark.parametrize("model", CATALOG)
def test_target_matching_equals_peft_on_every_catalog_model(model):
    spec = shallow(model, 3)  # three blocks: first, middle and last for the layer cases (a sum over blocks)
    for values in matching_cases(spec):
        options = METHODS["lora"].parse_options({"target_preset": "custom", **values})
        try:
            ours = our_targets(spec, options)
        except ExplorerError as error:  # where we refuse, PEFT must refuse too
            with pytest.raises(Exception):
                peft_targets(spec, options)
            assert "\n" not in str(error)
            continue
        assert ours == peft_targets(spec, options), values


def test_gpt2_peft_style_targets_adapt_both_c_proj():
    """PEFT's suffix rule: c_proj is attn.c_proj and mlp.c_proj; the breakdown names both."""
    spec = specs.catalog_spec("gpt2")
    r = calculator.from_request("gpt2", "lora", {"target_modules": "c_attn,c_proj,c_fc"}, exact_mode="compute")
    assert r.agrees
    modules = " ".join(t.module for t in r.terms)
    assert "attn.c_proj (matched by c_proj)" in modules and "mlp.c_proj (matched by c_proj)" in modules
    assert r.trainable_formula == 12 * 8 * ((768 + 2304) + (768 + 768) + (768 + 3072) + (3072 + 768))
    assert spec.arch.all_linear and "lm_head" not in spec.arch.all_linear


def test_moe_targets_follow_peft_conversion_to_expert_parameters():
    """PEFT 0.21 on transformers 5 turns gate_proj/up_proj/down_proj targets of a Qwen2-MoE-style model into
    target_parameters on the fused experts (rank doubled for gate_up_proj); the counts follow PEFT's build."""
    r = calculator.from_request("qwen3-30b-a3b", "lora", {"target_modules": "q_proj,gate_proj,up_proj,down_proj",
                                                           "lora_dropout": 0}, exact_mode="compute")
    assert r.agrees
    terms = {t.module: t.count for t in r.terms}
    assert terms["mlp.experts.gate_up_proj (parameter)"] == 48 * 16 * 128 * (2048 + 1536)


def test_where_peft_refuses_the_defaults_the_calculator_says_so_in_peft_words():
    """DeepSeek-V2-Lite's dense and shared MLP layers are named like the experts PEFT converts: all-linear
    becomes LoRA on parameters, which PEFT refuses with dropout (LoRA's default 0.05)."""
    from peft import get_peft_model

    spec = specs.catalog_spec("deepseek-v2-lite")
    options = METHODS["lora"].parse_options({})
    with pytest.raises(ExplorerError, match="ParamWrapper does not work with lora_dropout") as ours:
        calculator.calculate(spec, "lora", options, exact_mode="skip")
    assert "\n" not in str(ours.value)
    from peft import LoraConfig

    config = LoraConfig(task_type="CAUSAL_LM", r=8, lora_dropout=0.05, target_modules=sorted(spec.arch.all_linear))
    with warnings.catch_warnings(), pytest.raises(ValueError, match="ParamWrapper does not work with lora_dropout"):
        warnings.simplefilter("ignore")
        get_peft_model(specs.meta_model(spec), config)
    fixed = calculator.calculate(spec, "lora", METHODS["lora"].parse_options({"lora_dropout": 0}))
    assert fixed.agrees


def measured_flops(model, seq_len):
    from torch.utils.flop_counter import FlopCounterMode

    model.train(True)
    ids = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
    mask = torch.ones(1, seq_len, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as forward:
        out = model(input_ids=ids, attention_mask=mask)
    with FlopCounterMode(display=False) as backward:
        out.logits.float().sum().backward()
    return forward.get_total_flops(), backward.get_total_flops()


# (model, layers kept, methods): every new kind of block against torch's counter, at two sequence lengths.
# LN tuning where norms sit differently (Qwen3's norms inside attention, OLMo-2's after each sub-block) and VeRA
# on MoE blocks (a router and shared experts beside the fused experts).
FLOP_CASES = [("qwen3-8b", 2, ("lora", "full", "ln_tuning")), ("gemma-3-4b", 6, ("lora", "prefix")),
              ("gpt-oss-20b", 2, ("lora", "full", "adapter")),
              ("deepseek-v2-lite", 2, ("ia3", "full", "prompt", "vera")),
              ("qwen3-30b-a3b", 1, ("lora", "full", "vera")), ("olmo-2-7b", 1, ("lora", "ln_tuning")),
              ("phi-4-mini", 1, ("dora",)), ("granite-3.3-8b", 1, ("lora",)), ("smollm3-3b", 4, ("lora",))]


@pytest.mark.parametrize("model, layers, methods", FLOP_CASES)
def test_flop_formulas_equal_torch_on_the_new_architectures(model, layers, methods):
    """MoE layers run transformers' batched_mm experts: every token through exactly top-k experts (the
    routing assumption of the formulas), so torch counts what the formula assumes."""
    spec = shallow(model, layers)
    for method in methods:
        options = METHODS[method].parse_options({})
        adaptation = METHODS[method].adaptation(spec, options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = exact.build_on_meta(spec, method, options)
            for seq_len in (8, 24):
                assert measured_flops(built, seq_len) == count_flops(spec.arch, adaptation, seq_len), (method, seq_len)


@pytest.mark.parametrize("text, message", [
    ('{"model_type": "t5"}', "no causal language model"),
    ('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 5, "num_hidden_layers": 1, '
     '"intermediate_size": 8, "vocab_size": 10}', "transformers could not build|could not be read"),
    ('{"model_type": "qwen3", "num_hidden_layers": 5000}', "calculator stops at 1024"),
])
def test_configs_transformers_cannot_build_get_one_line(text, message):
    with pytest.raises(ExplorerError, match=message) as error:
        calculator.from_request("", "lora", {}, exact_mode="skip", config_text=text)
    assert "\n" not in str(error.value)


def test_any_model_type_transformers_builds_works_from_a_pasted_config():
    """A model type none of the calculator's code names: its table comes from the model itself."""
    config = {"model_type": "starcoder2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}
    r = calculator.from_request("", "lora", {}, exact_mode="compute", config_text=json.dumps(config))
    assert r.agrees and r.trainable_formula > 0


def test_a_hybrid_linear_attention_model_counts_exactly_and_says_its_flops_are_approximate():
    """Qwen3-Next: gated delta-net layers (a chunked scan) beside attention layers. Parameters are exact; its
    scan's FLOPs do not grow as a·s + b·s², which the derivation detects (a third traced length) and says."""
    config = {"model_type": "qwen3_next", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128}
    # (a MoE model of the Qwen2-MoE pattern: PEFT's conversion makes LoRA on its experts refuse dropout)
    r = calculator.from_request("", "lora", {"lora_dropout": 0}, exact_mode="compute", config_text=json.dumps(config))
    assert r.agrees and len(r.spec.arch.blocks) == 2
    assert r.as_json()["flops"]["formulas_exact"] is False
    assert specs.catalog_spec("qwen3-8b").arch.flops_exact


@pytest.mark.parametrize("values, message", [
    ({"target_modules": "re:(["}, "does not compile"),
    ({"target_modules": "q_proj", "layers_to_transform": "0,40"}, "layers 0 to 29"),
    ({"target_modules": "nothing_here"}, "not found in the base model"),
    ({"target_modules": "self_attn"}, "not supported"),
    ({"num_gpus": 0}, "num_gpus must be between 1 and 1024"),
    ({"num_gpus": 100000}, "num_gpus must be between 1 and 1024"),
    ({"sharding": "zero4"}, "sharding must be one of"),
    ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
])
def test_bad_targets_and_gpu_settings_get_one_clear_line(values, message):
    with pytest.raises(ExplorerError, match=message) as error:
        calculator.from_request("smollm2-135m", "lora", values, exact_mode="skip")
    assert "\n" not in str(error.value)
