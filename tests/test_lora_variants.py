"""LoRA's variants as real PEFT builds on the tiny model: PiSSA and OLoRA change the base at initialisation and save
a LoRA for the original base; LoRA+ gives B its own learning rate; VeRA shares frozen random matrices; LN tuning
trains norms only. (Counts, FLOPs, training and reloading are in the registry-wide tests.)"""

import dataclasses
import json
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import TINY, train_run

from explorer.compare import variants as compare
from explorer.methods import METHODS
from explorer.models import loading
from explorer.train import loop, runs
from explorer.train.config import TrainConfig

IDS = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])


def logits_of(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def train(tmp_path, method, options=None, **overrides):
    values = dict(model=TINY, method=method, dataset="pirate", steps=4, batch_size=4, seq_len=64, eval_examples=0,
                  eval_every=100, learning_rate=0.03)
    values.update(overrides)
    seen = {}

    def inspect(stage, model):
        training = model.training
        seen[stage] = logits_of(model.eval())
        if stage == "before":
            seen["q_proj"] = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.detach().clone()
        model.train(training)

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp_path))
    summary = loop.train(TrainConfig(**values), options or {}, run_dir, inspect_model=inspect)
    return summary, run_dir, seen


@pytest.mark.parametrize("method", ["pissa", "olora"])
def test_mutating_inits_save_a_lora_that_reproduces_the_adapted_logits_on_the_original_base(tmp_path, cache,
                                                                                           method):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    summary, run_dir, seen = train(tmp_path, method, {"r": 4})
    original = AutoModelForCausalLM.from_pretrained(cache / TINY, use_safetensors=True).eval()
    weight = original.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(seen["q_proj"], weight, atol=1e-3), "initialisation moved part of W into the adapter"
    assert torch.allclose(seen["before"], logits_of(original), atol=1e-3), "... without changing the model's output"
    saved = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["r"] == 8 and saved["init_lora_weights"] is True  # rank 2r
    assert not list(run_dir.glob(".tmp-*")), "the initial adapter kept for the conversion is gone"
    reloaded = PeftModel.from_pretrained(original, run_dir / "adapter").eval()  # plain PEFT, outside the app
    after = seen["after"]
    scale = max(1.0, float(after.abs().max()) / 10)
    assert torch.allclose(logits_of(reloaded), after, atol=1e-4 * scale)
    assert not torch.allclose(after, seen["before"], atol=1e-2), "training changed the outputs"
    merged = reloaded.merge_and_unload()
    assert torch.allclose(logits_of(merged), after, atol=1e-4 * scale)


def test_compare_shows_a_pissa_run_merged_equal_to_adapted_against_the_original_base(cache):
    run_id = train_run("pissa", options={"r": 4}, learning_rate=0.03)
    s = compare.session(run_id)
    base = loading.load(TINY).model
    assert s.base is base, "the base column is the shared, original base model"
    with s.adapted.disable_adapter():
        assert torch.equal(logits_of(s.adapted), logits_of(base)), "the converted adapter sits on the original W"
    result = compare.run_comparison(run_id, compare.heldout_prompts(run_id, 2), 8, measure_latency=False)
    assert result["mergeable"] is True and result["greedy_match"] is True
    assert result["max_abs_logit_diff_adapted_vs_merged"] < 1e-3


def test_loraplus_gives_every_b_matrix_the_ratio_times_the_learning_rate(cache, monkeypatch):
    method = METHODS["loraplus"]
    options = method.parse_options({"loraplus_lr_ratio": 8})
    loaded = loading.load_fresh(TINY, method, options)
    model = method.apply(loaded.model, loaded.spec, options)
    optimizer = method.make_optimizer(model, options, 1e-3, torch.optim.AdamW, {"weight_decay": 0.0})
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert set(rate) == {id(p) for p in trainable.values()}
    assert {name for name, p in trainable.items() if rate[id(p)] == pytest.approx(8e-3)} == \
        {name for name in trainable if "lora_B" in name}
    assert all(rate[id(p)] == pytest.approx(1e-3) for name, p in trainable.items() if "lora_A" in name)
    calls = []  # the training loop asks the method for its optimizer instead of making its own
    monkeypatch.setitem(METHODS, "loraplus", dataclasses.replace(
        method, make_optimizer=lambda *args: calls.append(args[2]) or method.make_optimizer(*args)))
    monkeypatch.setattr(loop, "make_optimizer", lambda *args: pytest.fail("the loop made its own optimizer"))
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=runs.runs_dir()))
    loop.train(TrainConfig(model=TINY, method="loraplus", steps=1, seq_len=64, eval_examples=0), {}, run_dir)
    assert calls == [METHODS["loraplus"].default_lr]


def test_vera_trains_two_vectors_per_layer_on_shared_frozen_random_matrices(tmp_path, cache):
    method = METHODS["vera"]
    options = method.parse_options({"r": 16})
    loaded = loading.load_fresh(TINY, method, options)
    model = method.apply(loaded.model, loaded.spec, options)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("vera_lambda_b" in n or "vera_lambda_d" in n for n in trainable)
    layers = [m for m in model.modules() if hasattr(m, "vera_lambda_b")]
    shared = {id(layer.vera_A["default"]) for layer in layers}
    assert len(shared) == 1, "one A for every adapted layer"
    assert not any(b.requires_grad for name, b in model.named_buffers() if "vera_" in name)
    for layer in layers:
        layer.vera_lambda_b["default"].data.normal_()  # a trained-looking update, so merging has work to do
    adapted = logits_of(model.eval())
    assert not torch.allclose(adapted, logits_of(loading.load_fresh(TINY).model.eval()), atol=1e-3)
    merged = model.merge_and_unload()
    assert torch.allclose(logits_of(merged), adapted, atol=1e-4 * max(1.0, float(adapted.abs().max()) / 10))
    assert not any("vera" in name for name, _ in merged.named_buffers()), "merged: the shared matrices are gone"


def test_ln_tuning_trains_only_norm_copies_and_merging_swaps_them_in(cache):
    method = METHODS["ln_tuning"]
    options = method.parse_options({})
    loaded = loading.load_fresh(TINY, method, options)
    model = method.apply(loaded.model, loaded.spec, options)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("ln_tuning_layers" in n and "norm" in n for n in trainable)
    assert sum(p.numel() for p in trainable.values()) == (2 * 2 + 1) * 32  # 2 layers × 2 norms + final, d=32
    for p in trainable.values():
        p.data.mul_(1.5)
    adapted = logits_of(model.eval())
    merged = model.merge_and_unload()
    assert torch.allclose(logits_of(merged), adapted, atol=1e-5)
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in loading.load_fresh(TINY).model.parameters())
