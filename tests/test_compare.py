"""Compare: base, adapted and merged models of saved runs; merge fidelity; held-out scores; export; errors."""

import json
import shutil

import pytest
import torch
from conftest import BUNDLED, TINY, train_run

from explorer import evaluate
from explorer.compare import export
from explorer.compare import variants as compare
from explorer.data import chat, sources
from explorer.data.tasks import TASKS
from explorer.errors import ExplorerError
from explorer.methods import METHODS
from explorer.models import loaded as loaded_models
from explorer.models import registry
from explorer.train import runs


def run_cli_in_process(argv, capsys):
    from explorer.cli.main import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err



@pytest.fixture(scope="module")
def tiny_runs(lora_pirate):
    options = {"head": {"head_type": "lm"}}
    lrs = {"ia3": 0.3, "prompt": 0.3, "prefix": 0.3, "full": 3e-3}
    # The methods these tests open (the LoRA variants' Compare checks are in tests/test_lora_variants.py).
    return {"lora": lora_pirate} | {m: train_run(m, options=options.get(m), learning_rate=lrs.get(m, 0.05))
                                    for m in ("dora", "ia3", "prompt", "prefix", "adapter", "head", "full")}


def prompts_of(run_id, n=2):
    return compare.heldout_prompts(run_id, n)


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_merged_logits_equal_adapted_logits_and_greedy_outputs_match(tiny_runs, method):
    run_id = tiny_runs[method]
    s = compare.session(run_id)
    prompts = prompts_of(run_id)
    ids = compare.generate_all(s, prompts, 8)
    for ids_a, seq in zip(ids["adapted"], compare.fidelity_sequences(s, prompts, ids["adapted"])):
        adapted, merged = compare.logits(s.adapted, seq), compare.logits(s.merged, seq)
        assert float((adapted - merged).abs().max()) < 1e-4 * max(1.0, float(adapted.abs().max()) / 10)
    assert not torch.allclose(compare.logits(s.adapted, seq), compare.logits(s.base, seq), atol=1e-3), \
        "the trained adapter changes the logits, so the comparison means something"
    result = compare.run_comparison(run_id, prompts, 8, measure_latency=False)
    assert result["greedy_match"] is True and result["outputs"]["adapted"] == result["outputs"]["merged"]
    assert result["max_abs_logit_diff_adapted_vs_merged"] < 1e-3
    assert type(s.merged).__name__ == "LlamaForCausalLM", "the merged model is a plain transformers model"


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "prompt", "prefix"])
def test_with_the_adapter_disabled_logits_equal_the_base_models_exactly(tiny_runs, method):
    s = compare.session(tiny_runs[method])
    seq = torch.tensor([chat.prompt_ids(s.tokenizer, "Ahoy, who goes there?")])
    with s.adapted.disable_adapter():
        disabled = compare.logits(s.adapted, seq)
    assert torch.equal(disabled, compare.logits(s.base, seq))


@pytest.mark.parametrize("method", ["prompt", "prefix", "adapter"])
def test_methods_that_cannot_merge_say_why_and_still_show_the_adapted_column(tiny_runs, method):
    result = compare.run_comparison(tiny_runs[method], prompts_of(tiny_runs[method]), 6, measure_latency=False)
    assert result["mergeable"] is False and result["outputs"]["merged"] is None
    assert result["not_mergeable_reason"] == METHODS[method].merge_reason
    assert {"prompt": "extra tokens", "prefix": "keys and values", "adapter": "non-linear"}[method] in \
        result["not_mergeable_reason"]
    assert all(isinstance(t, str) for t in result["outputs"]["adapted"])
    assert result["max_abs_logit_diff_adapted_vs_merged"] is None and result["greedy_match"] is None


@pytest.mark.parametrize("method", ["head", "full"])
def test_head_and_full_have_nothing_to_merge(tiny_runs, method):
    result = compare.run_comparison(tiny_runs[method], "Hello there", 4, measure_latency=False)
    assert result["nothing_to_merge"] and result["max_abs_logit_diff_adapted_vs_merged"] == 0.0
    assert isinstance(result["outputs"]["merged"], str), "one prompt gives strings, as the CLI documents"


def test_latency_is_measured_for_each_variant_beside_the_calculators_flops(tiny_runs):
    cost = compare.measure_cost(tiny_runs["lora"], "Hello", new_tokens=4, repeats=2)
    assert all(cost["latency_ms_per_token"][v] > 0 for v in compare.VARIANTS)
    assert cost["tokens_per_second"]["base"] == pytest.approx(1000 / cost["latency_ms_per_token"]["base"])
    assert cost["flop_overhead_percent"]["adapted"] > 0 and cost["flop_overhead_percent"]["merged"] == 0
    prompt_cost = compare.measure_cost(tiny_runs["prompt"], "Hello", new_tokens=2, repeats=1)
    assert prompt_cost["latency_ms_per_token"]["merged"] is None


def test_heldout_scores_come_from_real_generations(tiny_runs):
    run_id = tiny_runs["lora"]
    result = compare.evaluate_heldout(run_id, 3)
    s = compare.session(run_id)
    _, rows = sources.load_dataset("pirate")
    prompts, refs = zip(*(evaluate.user_and_reference(r) for r in rows[:3]))
    replies = evaluate.generate_replies(s.adapted, s.tokenizer, list(prompts), 32, s.device)
    assert result["task_score"]["adapted"] == TASKS["pirate"].score(replies, list(refs))
    assert result["heldout_loss"]["adapted"] == pytest.approx(result["heldout_loss"]["merged"], rel=1e-4)
    assert result["heldout_loss"]["adapted"] != result["heldout_loss"]["base"]


def test_the_forgetting_probe_is_counted_and_said_in_a_sentence(tiny_runs):
    from explorer.ui import compare_tab

    result = compare.evaluate_heldout(tiny_runs["lora"], 2, probe_examples=4)
    right = result["probe_right"]
    assert all(right[v] == result["probe_score"][v] * 4 for v in compare.VARIANTS)
    assert f"answers {right['adapted']} of 4 general questions (the base: {right['base']})" in \
        compare_tab.heldout_text(result)
    forgot = compare_tab.forgetting_text({"probe_examples": 10, "probe_right": {"base": 10, "adapted": 4, "merged": 5}})
    assert forgot == ("\n\nBut the fine-tune forgot a lot: it answers 4 of 10 general questions now (the base: 10); "
                      "fewer steps or a lower learning rate forget less. Merged, it answers 5 of 10.")
    kept = compare_tab.forgetting_text({"probe_examples": 10, "probe_right": {"base": 9, "adapted": 9, "merged": 9}})
    assert kept == "\n\nThe fine-tune still answers 9 of 10 general questions (the base: 9)."


def test_a_trained_lora_on_the_bundled_model_changes_greedy_output(cache):
    run_id = train_run("lora", model=BUNDLED, steps=4, batch_size=2, learning_rate=1e-3, seq_len=64,
                       eval_loss_examples=2, max_new_tokens=8)  # the held-out task score's replies: 8 tokens
    prompts = compare.heldout_prompts(run_id, 2)
    result = compare.run_comparison(run_id, prompts, 8, measure_latency=False, heldout_examples=2)
    base, adapted = result["outputs"]["base"], result["outputs"]["adapted"]
    assert any(a != b for a, b in zip(adapted, base)), "the fine-tune changed at least one reply"
    assert result["greedy_match"] and result["max_abs_logit_diff_adapted_vs_merged"] < 1e-2
    assert set(result["task_score"]) == set(compare.VARIANTS)
    assert all(0 <= result["task_score"][v] <= 1 for v in compare.VARIANTS)
    assert result["heldout_loss"]["adapted"] < result["heldout_loss"]["base"]


def test_qlora_merges_into_the_dequantized_base_and_measures_4bit_rounding(cache):
    """On the tiny model: bitsandbytes' portable CPU path handles its 32-wide layers."""
    run_id = train_run("qlora", steps=3, learning_rate=0.05)
    result = compare.run_comparison(run_id, "What is the capital of Spain?", 6, measure_latency=False)
    assert isinstance(result["outputs"]["merged"], str)
    four = result["fidelity"]["merge_into_4bit"]
    assert four["layers"] == 7 * 2, "all-linear LoRA on the tiny model's 2 blocks"
    assert four["update_lost_percent"] > 0 and "4-bit" in four["explanation"]
    compare_state = compare.session(run_id)
    assert not any("4bit" in type(m).__name__.lower() for m in compare_state.merged.modules())


def test_export_writes_a_model_the_registry_and_transformers_load(tiny_runs, cache, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("EXPLORER_MODELS_CACHE", str(tmp_path))
    shutil.copytree(cache / TINY, tmp_path / TINY)
    run_id = tiny_runs["lora"]
    loaded_models.LOADED.drop("compare:" + run_id)
    folder = export.export_merged(run_id)
    assert folder.parent == tmp_path and sorted(p.name for p in folder.glob("*.safetensors"))
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in folder.iterdir())
    assert folder.name in registry.registry()
    reloaded = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
    s = compare.session(run_id)
    seq = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.allclose(compare.logits(reloaded, seq), compare.logits(s.merged, seq), atol=1e-5)
    archive = export.zip_export(folder)
    assert archive.stat().st_size > 0
    loaded_models.LOADED.drop("compare:" + run_id)
    with pytest.raises(ExplorerError, match="cannot merge"):
        export.export_merged(tiny_runs["prompt"])


def test_loaded_models_keep_the_most_recent_within_the_budget():
    cache = loaded_models.LoadedModels(budget=lambda: 250)
    loads = []
    for key in ["a", "b", "a", "c"]:
        cache.get(key, lambda key=key: loads.append(key) or key, lambda value: 100)
    assert loads == ["a", "b", "c"], "a cached model is not loaded twice"
    assert cache.keys() == ["a", "c"], "the least recently used (b) went first"
    big = loaded_models.LoadedModels(budget=lambda: 10)
    big.get("x", lambda: "x", lambda value: 100)
    assert big.keys() == ["x"], "one model is always kept, even above the budget"


# --------------------------------------------------------------------------- bad input


def corrupt_copy(run_id, edit):
    source = runs.run_path(run_id)
    target = runs.runs_dir() / runs.new_run_id("lora")
    shutil.copytree(source, target)
    edit(target)
    return target.name


def test_bad_input_gets_clear_messages(tiny_runs):
    with pytest.raises(ExplorerError, match="not a run id"):
        compare.run_comparison("../../etc", "hi")
    with pytest.raises(ExplorerError, match="no run"):
        compare.run_comparison("20990101-000000-lora-abcdef", "hi")
    with pytest.raises(ExplorerError, match="prompt is empty"):
        compare.run_comparison(tiny_runs["lora"], "  \n ")
    no_settings = corrupt_copy(tiny_runs["lora"], lambda d: (d / "settings.json").write_text("{not json"))
    with pytest.raises(ExplorerError, match="settings.json"):
        compare.run_comparison(no_settings, "hi")
    no_adapter = corrupt_copy(tiny_runs["lora"], lambda d: shutil.rmtree(d / "adapter"))
    with pytest.raises(ExplorerError, match="no saved adapter"):
        compare.run_comparison(no_adapter, "hi")
    truncated = corrupt_copy(tiny_runs["lora"], lambda d: (d / "adapter" / "adapter_model.safetensors").write_bytes(
        (d / "adapter" / "adapter_model.safetensors").read_bytes()[:100]))
    with pytest.raises(ExplorerError, match="cannot be loaded"):
        compare.run_comparison(truncated, "hi")
    own = corrupt_copy(tiny_runs["adapter"], lambda d: (d / "adapter" / "explorer_adapter.safetensors").write_bytes(b"x"))
    with pytest.raises(ExplorerError, match="cannot be loaded"):
        compare.run_comparison(own, "hi")
    with pytest.raises(ExplorerError, match="temperature"):
        compare.run_comparison(tiny_runs["lora"], "hi", temperature=float("nan"))


def test_cli_compare_prints_the_documented_json(tiny_runs, capsys):
    code, out, _ = run_cli_in_process(["compare", "--run", tiny_runs["lora"], "--prompt", "Hello", "--max-new-tokens",
                                       "4", "--heldout", "2", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    for key in ("run_id", "method", "mergeable", "outputs", "max_abs_logit_diff_adapted_vs_merged", "greedy_match",
                "latency_ms_per_token", "task_score"):
        assert key in result
    assert set(result["outputs"]) == set(result["latency_ms_per_token"]) == set(result["task_score"]) == \
        {"base", "adapted", "merged"}
    assert set(result["probe_score"]) == {"base", "adapted", "merged"}, "the probe is on by default (10 questions)"
    assert result["forgetting"].startswith("The fine-tune") and "of 10" in result["forgetting"]
    code, out, _ = run_cli_in_process(["compare", "--run", tiny_runs["prefix"], "--prompt", "Hi", "--max-new-tokens",
                                       "2", "--heldout", "0", "--probe", "0", "--no-latency", "--json"], capsys)
    result = json.loads(out)
    assert result["outputs"]["merged"] is None and "keys and values" in result["not_mergeable_reason"]


@pytest.mark.parametrize("argv, fragment", [
    (["compare", "--run", "nope"], "not a run id"),
    (["compare", "--run", "20990101-000000-lora-abcdef", "--prompt", "x"], "no run"),
    (["compare", "--run", "20990101-000000-lora-abcdef", "--prompt", "x", "--heldout", "many"], "invalid literal"),
])
def test_cli_compare_errors_are_one_line(argv, fragment, capsys):
    code, out, err = run_cli_in_process(argv, capsys)
    assert code == 2 and fragment in err and "Traceback" not in err
