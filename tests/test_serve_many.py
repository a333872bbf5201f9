"""One base, many adapters on the tiny model: PEFT's mixed batch answers every adapter exactly as that adapter
alone does, the measured memory is the tensors' own bytes, the Calculator's fleet figures follow its
formulas, and bad input gets one clear line."""

import json

import pytest
import torch
from conftest import TINY, copy_run, train_run

from explorer import calculator
from explorer.compare import serve_many
from explorer.costs import memory
from explorer.errors import ExplorerError
from explorer.methods import METHODS
from explorer.models import loading
from explorer.models import specs as model_specs
from explorer.models.loaded import tensor_bytes
from explorer.train import runs

PROMPTS = ["Ahoy there", "Where is the treasure buried, my friend? Tell me everything."]  # two lengths: padding


@pytest.fixture(scope="module")
def lora_runs(lora_pirate):
    """Two LoRA runs of different ranks on different tasks, trained hard enough to move the tiny model."""
    return [lora_pirate,
            train_run("lora", "french", {"r": 4}, learning_rate=0.05)]


@pytest.fixture(scope="module")
def fleet(lora_runs):
    return serve_many.load_fleet(serve_many.check_runs(lora_runs))


def test_mixed_batch_replies_equal_each_adapters_own(fleet):
    mixed = serve_many.mixed_replies(fleet, PROMPTS, max_new_tokens=6)
    assert list(mixed) == [serve_many.BASE, "r0", "r1"]
    for name, replies in mixed.items():
        assert replies == serve_many.own_replies(fleet, name, PROMPTS, 6), name
    assert len({json.dumps(r) for r in mixed.values()}) == 3, "base and the two adapters answer differently"


def test_mixed_batch_logits_equal_each_adapters_own(fleet):
    served = [serve_many.BASE, "r0", "r1"]
    names = [n for n in served for _ in PROMPTS]
    mixed = serve_many.mixed_logits(fleet, [p for _ in served for p in PROMPTS], names)
    for i, name in enumerate(served):
        own = serve_many.own_logits(fleet, name, PROMPTS)
        assert torch.allclose(mixed[2 * i:2 * i + 2], own, atol=1e-5), name
    base = mixed[0:2]
    assert (mixed[2:4] - base).abs().max() > 1e-3 and (mixed[4:6] - base).abs().max() > 1e-3


def test_serve_reports_replies_checks_and_measured_memory(lora_runs):
    result = serve_many.serve(lora_runs, PROMPTS, max_new_tokens=4, new_tokens=2, repeats=1, large_model="llama-2-7b")
    json.dumps(result)
    labels = ["base"] + lora_runs
    assert [a["label"] for a in result["adapters"]] == labels and result["batch_rows"] == 6
    assert set(result["replies"]) == set(labels) and all(len(r) == 2 for r in result["replies"].values())
    assert all(result["greedy_match"].values()) and max(result["max_abs_logit_diff"].values()) < 1e-5

    spec = model_specs.resolve(TINY)
    lora = METHODS["lora"]
    expected_adapters = [calculator.calculate(spec, "lora", lora.parse_options(o), exact_mode="skip").adapter_file_bytes
                         for o in ({}, {"r": 4})]
    mem = result["memory"]
    assert list(mem["adapter_bytes"].values()) == expected_adapters, "LoRA's r·(in+out) per layer, float32"
    base = tensor_bytes(loading.load_fresh(TINY).model)  # float32 weights and the rotary buffer
    assert spec.arch.total_params() * 4 < base < spec.arch.total_params() * 4 + 1000
    assert mem["base_bytes"] == base and mem["shared_base_and_adapters_bytes"] == base + sum(expected_adapters)
    assert list(mem["merged_copy_bytes"].values()) == [base, base], "a merged copy is the whole model again"
    assert mem["merged_copies_bytes"] == 2 * base
    speed = result["throughput"]
    assert speed["requests"] == 4 and speed["tokens"] == 8
    assert set(speed["tokens_per_second"]) == {"mixed_batch", "merged_in_turn", "swap_per_request"}
    assert all(v > 0 for v in speed["tokens_per_second"].values())
    assert "every reply equals that adapter's own greedy reply" in result["summary"]


def test_fleet_figures_follow_the_calculator():
    figures = serve_many.fleet_figures("llama-2-7b")
    spec = model_specs.resolve("llama-2-7b")
    assert figures["adapter_trainable_params"] == 19_988_480  # LoRA r=8 on all 7 linear layers of Llama-2-7B
    assert figures["adapter_bytes"] == 19_988_480 * 4
    bf16 = memory.base_weight_bytes(spec.arch, "bf16")
    assert bf16 == spec.arch.total_params() * 2
    last = figures["rows"][-1]
    assert last["adapters"] == 1000
    assert last["merged_bf16_copies_bytes"] == 1000 * bf16
    assert last["base_4bit_plus_adapters_bytes"] == memory.base_weight_bytes(spec.arch, "bf16", nf4=True) + 1000 * 19_988_480 * 4
    qv = serve_many.fleet_figures("llama-2-7b", "lora", {"target_preset": "q,v"})
    assert qv["adapter_trainable_params"] == 4_194_304  # the chapter's q,v setting: 8·(4096+4096)·2·32


def test_bad_input_is_one_clear_line(lora_runs, cache):
    a, b = lora_runs
    prompt = train_run("prompt", "pirate", {"num_virtual_tokens": 2}, steps=1)
    other_base = copy_run(b, edit_config={"model": "smollm2-135m-instruct"})
    dora = copy_run(b, edit_config={"method": "dora"})
    qlora = copy_run(b, edit_config={"method": "qlora"})
    no_weights = copy_run(b)
    (runs.run_path(no_weights) / "adapter" / "adapter_model.safetensors").unlink()
    cases = [
        ([], "Choose at least one finished run"),
        ("", "Choose at least one finished run"),
        ([a, a], f"Run {a} is listed twice"),
        ([a] * 9, "serve at most 8 at once"),
        ([a, prompt], r"uses Prompt tuning \(prompt\); one base serving many adapters in one batch needs runs of "
                      r"LoRA \(lora\), QLoRA \(qlora\)"),
        ([a, dora], r"uses DoRA \(dora\)"),
        ([a, other_base], r"different base models \(tiny-random-llama and smollm2-135m-instruct\)"),
        ([a, qlora], "needs a 4-bit base and run .* a float one"),
        ([a, no_weights], "adapter_model.safetensors is missing"),
        ([a, "../../etc"], "not a run id"),
    ]
    for run_ids, message in cases:
        with pytest.raises(ExplorerError, match=message):
            serve_many.serve(run_ids, PROMPTS)
    with pytest.raises(ExplorerError, match="prompt is empty"):
        serve_many.serve([a], [" "])
    with pytest.raises(ExplorerError, match="repeats must be a whole number"):
        serve_many.serve([a], PROMPTS, repeats=0)
