"""Composition experiment on the tiny model: PEFT's LoRA combinations hold the documented maths, soft
prompts concatenate exactly, scores come back in the documented shape, bad input gets clear errors,
and the demo runs are trained once and then reused."""

import json
import math

import pytest
import torch
from conftest import TINY, copy_run, force_status, train_run

from explorer.compare import compose, prefix_concat
from explorer.errors import ExplorerError
from explorer.train import runs

IDS = torch.tensor([[1, 5, 9, 14, 3, 7]])


@pytest.fixture(scope="module")
def trained(lora_pirate):
    """Two LoRA runs of equal rank (french with rsLoRA), two soft prompts of 4 and 6 tokens, and two prefixes of
    4 and 6 tokens (the second trained through the reparameterization MLP)."""
    return {
        "lora-pirate": lora_pirate,
        "lora-french": train_run("lora", "french", {"use_rslora": True}, learning_rate=0.05),
        "prompt-pirate": train_run("prompt", "pirate", {"num_virtual_tokens": 4}),
        "prompt-french": train_run("prompt", "french", {"num_virtual_tokens": 6}),
        "prefix-pirate": train_run("prefix", "pirate", {"num_virtual_tokens": 4}),
        "prefix-french": train_run("prefix", "french", {"num_virtual_tokens": 6, "prefix_projection": True,
                                                        "encoder_hidden_size": 16}),
    }


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def alone(cache, run_id):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(cache / TINY, use_safetensors=True)
    return PeftModel.from_pretrained(base, str(runs.run_path(run_id) / "adapter")).eval()


def lora_layers(model):
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and "combined" in m.lora_A]
    assert layers, "the combined adapter sits on the LoRA layers"
    return layers


@pytest.mark.parametrize("order", ["plain-first", "rslora-first"])
def test_cat_adds_the_weighted_updates_exactly(trained, order):
    """cat: A = [w1·s1·A1 ; w2·s2·A2], B = [B1 B2], scaling 1: B·A = w1·ΔW1 + w2·ΔW2, ΔW_i = s_i·B_i·A_i.
    With rsLoRA first, PEFT 0.21 alone would scale the result by √(r1+r2): compose puts it back to 1."""
    pair = [trained["lora-pirate"], trained["lora-french"]]
    if order == "rslora-first":
        pair.reverse()
    weights = (0.7, -1.3)
    comb = compose.build_lora_combination(*pair, how="cat", weights=weights)
    assert comb.info["rank"] == 16 and comb.info["ranks"] == [8, 8]
    checked = 0
    for layer in lora_layers(comb.model):
        assert layer.scaling["combined"] == 1.0
        expected = weights[0] * layer.get_delta_weight("a") + weights[1] * layer.get_delta_weight("b")
        assert expected.abs().max() > 0, "the trained updates are not zero"
        assert torch.allclose(layer.get_delta_weight("combined"), expected, atol=1e-6, rtol=0)
        checked += 1
    assert checked == 2 * 7, "all seven linear layers of both blocks"


def test_linear_combines_the_factors_not_the_updates(trained, cache):
    """linear: A = Σ sign(w_i·s_i)·√|w_i·s_i|·A_i, B = Σ √|w_i·s_i|·B_i (PEFT 0.21's
    _generalized_task_arithmetic_weighted_adapter), so B·A also holds the cross terms B_1·A_2, B_2·A_1."""
    weights = (1.0, 0.5)
    comb = compose.build_lora_combination(trained["lora-pirate"], trained["lora-french"], "linear", weights)
    assert comb.info["rank"] == 8
    for layer in lora_layers(comb.model):
        f = [w * layer.scaling[name] for w, name in zip(weights, ("a", "b"))]
        A = [layer.lora_A[name].weight for name in ("a", "b")]
        B = [layer.lora_B[name].weight for name in ("a", "b")]
        expected_A = sum(math.copysign(math.sqrt(abs(x)), x) * a for x, a in zip(f, A))
        expected_B = sum(math.sqrt(abs(x)) * b for x, b in zip(f, B))
        assert torch.allclose(layer.lora_A["combined"].weight, expected_A, atol=1e-6, rtol=0)
        assert torch.allclose(layer.lora_B["combined"].weight, expected_B, atol=1e-6, rtol=0)
        assert layer.scaling["combined"] == 1.0
        cross = math.sqrt(f[0] * f[1]) * (B[0] @ A[1] + B[1] @ A[0])
        sum_of_updates = f[0] * B[0] @ A[0] + f[1] * B[1] @ A[1]
        assert torch.allclose(layer.get_delta_weight("combined"), sum_of_updates + cross, atol=1e-6, rtol=0)
    # Variant B on the shared base is run B's adapter alone.
    assert torch.allclose(logits(comb.select("B")), logits(alone(cache, trained["lora-french"])), atol=1e-5)


def test_ties_keeps_rank_and_prunes_half(trained):
    comb = compose.build_lora_combination(trained["lora-pirate"], trained["lora-french"], "ties")
    assert comb.info == {"rank": 8, "ranks": [8, 8], "density": 0.5}
    layer = lora_layers(comb.model)[0]
    combined = layer.lora_A["combined"].weight
    assert torch.isfinite(combined).all() and combined.abs().max() > 0


def test_prompt_concat_is_both_prompts_in_order(trained, cache):
    a, b = trained["prompt-pirate"], trained["prompt-french"]
    comb = compose.build_prompt_combination(a, b)
    assert comb.info == {"num_virtual_tokens": 10, "parts": [4, 6]}
    encoders = comb.model.prompt_encoder
    parts = [encoders[name].embedding.weight for name in ("a", "b")]
    assert torch.equal(encoders["combined"].embedding.weight, torch.cat(parts))

    # The combined model really reads [P_A ; P_B ; the input]: same logits as the base fed those embeddings.
    base = comb.model.get_base_model()
    inputs = torch.cat([torch.cat(parts), base.get_input_embeddings()(IDS)[0]]).unsqueeze(0)
    with torch.no_grad():
        expected = base(inputs_embeds=inputs).logits[:, -IDS.shape[1]:]
        got = comb.select("combined")(input_ids=IDS).logits[:, -IDS.shape[1]:]
        assert torch.allclose(got, expected, atol=1e-5)
    # Variant A on the shared base is run A's adapter alone.
    assert torch.allclose(logits(comb.select("A")), logits(alone(cache, a)), atol=1e-5)

    scaled = compose.build_prompt_combination(a, b, weights=(0.5, 2.0))
    assert torch.equal(scaled.model.prompt_encoder["combined"].embedding.weight,
                       torch.cat([0.5 * parts[0], 2.0 * parts[1]]))


def check_result(result, method, how):
    assert result["method"] == method and result["how"] == how and result["datasets"] == ["pirate", "french"]
    assert set(result["scores"]) == {"A", "B", "combined"}
    for variant in ("A", "B", "combined"):
        assert set(result["scores"][variant]) == {"pirate", "french"}
        assert all(isinstance(s, float) and 0 <= s <= 1 for s in result["scores"][variant].values())
    assert result["interference"] == {
        "pirate": result["scores"]["combined"]["pirate"] - result["scores"]["A"]["pirate"],
        "french": result["scores"]["combined"]["french"] - result["scores"]["B"]["french"]}
    assert len(result["outputs"]) == 2  # one prompt of each dataset
    for row in result["outputs"]:
        assert row["dataset"] in ("pirate", "french") and isinstance(row["prompt"], str) and row["prompt"]
        assert set(row["replies"]) == {"A", "B", "combined"}
        assert all(isinstance(text, str) for text in row["replies"].values())
    assert isinstance(result["summary"], str) and "pirate" in result["summary"]
    json.dumps(result)


def test_compose_scores_every_variant_on_both_tasks(trained):
    lora = compose.compose(trained["lora-pirate"], trained["lora-french"], "cat", examples=2, max_new_tokens=4,
                           sample_outputs=1)
    check_result(lora, "lora", "cat")
    assert lora["combined"]["rank"] == 16 and lora["examples"] == {"pirate": 2, "french": 2}
    prompt = compose.compose(trained["prompt-pirate"], trained["prompt-french"], "concat", examples=2,
                             max_new_tokens=4, sample_outputs=1)
    check_result(prompt, "prompt", "concat")
    assert prompt["combined"]["num_virtual_tokens"] == 10


def test_same_dataset_is_allowed_but_said(trained):
    twin = copy_run(trained["lora-pirate"])
    result = compose.compose(trained["lora-pirate"], twin, "linear", examples=1, max_new_tokens=2,
                             sample_outputs=1)
    assert result["datasets"] == ["pirate", "pirate"] and set(result["scores"]["combined"]) == {"pirate"}
    assert "both runs trained on pirate" in result["summary"]
    best = max(result["scores"]["A"]["pirate"], result["scores"]["B"]["pirate"])
    assert result["interference"]["pirate"] == result["scores"]["combined"]["pirate"] - best


def test_bad_input_is_refused_with_a_clear_message(trained):
    lp, lf = trained["lora-pirate"], trained["lora-french"]
    pp, pf = trained["prompt-pirate"], trained["prompt-french"]
    other_base = copy_run(lf, edit_config={"model": "smollm2-135m-instruct"})
    ia3 = copy_run(lf, edit_config={"method": "ia3"}, options={})
    low_rank = copy_run(lf, options={"r": 4})
    no_weights = copy_run(lf)
    (runs.run_path(no_weights) / "adapter" / "adapter_model.safetensors").unlink()
    lora_said_prompt = copy_run(lf, edit_config={"method": "prompt"}, options={})
    cases = [
        ((lp, other_base, "cat"), {}, r"different base models \(tiny-random-llama and smollm2-135m-instruct\)"),
        ((lp, ia3, "cat"), {}, r"IA³ \(ia3\); composition supports LoRA \(lora\), prompt tuning \(prompt\) and "
                               r"prefix tuning \(prefix\) runs only"),
        ((lp, pf, "cat"), {}, "Run A is LoRA and run B is prompt tuning"),
        ((lp, lp, "cat"), {}, "same run"),
        ((lp, "20990101-000000-lora-abcdef", "cat"), {}, "There is no run"),
        (("../../etc", lf, "cat"), {}, "not a run id"),
        ((lp, lf, "concat"), {}, "'concat' does not combine LoRA runs: choose linear, cat, ties, svd, dare_linear"),
        ((lp, lf, "kv_concat"), {}, "'kv_concat' does not combine LoRA runs"),
        ((trained["prefix-pirate"], pf, "concat"), {}, "Run A is prefix tuning and run B is prompt tuning"),
        ((trained["prefix-pirate"], trained["prefix-french"], "concat"), {},
         "'concat' does not combine prefix tuning runs: choose kv_concat"),
        ((trained["prefix-pirate"], trained["prefix-french"], "kv_concat"), {"weights": (0.5, 1.0)},
         "takes no weights.*leave both at 1, got 0.5 and 1"),
        ((lp, low_rank, "dare_ties"), {}, "equal rank.*r=8.*r=4"),
        ((lp, lf, "ties"), {"density": 0}, "density must be a number above 0 and at most 1"),
        ((lp, lf, "magnitude_prune"), {"density": 1.5}, "density must be a number above 0 and at most 1"),
        ((pp, pf, "cat"), {}, "'cat' does not combine prompt tuning runs: choose concat"),
        ((lp, low_rank, "linear"), {}, "equal rank.*r=8.*r=4.*use 'cat'"),
        ((lp, lf, "cat"), {"weights": (1.0, float("nan"))}, "weight of run B must be a finite number"),
        ((lp, lf, "cat"), {"weights": (3, 1)}, "weight of run A must be a finite number from -2 to 2"),
        ((lp, lf, "cat"), {"weights": (1,)}, "weights must be two numbers"),
        ((lp, lf, "cat"), {"examples": 0}, "examples must be between 1 and 64, got 0"),
        ((lp, no_weights, "cat"), {}, "adapter_model.safetensors is missing"),
        ((lora_said_prompt, pp, "concat"), {}, "holds a LORA adapter, but its settings say prompt"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ExplorerError, match=message):
            compose.compose(*args, **kwargs)


def test_demo_runs_are_trained_once_then_reused(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_RUNS_DIR", str(tmp_path / "runs"))
    events = []
    chosen = ("lora", "prompt")
    first = compose.ensure_demo_runs(model=TINY, steps=2, on_event=events.append, methods=chosen)
    assert set(first) == {"lora-pirate", "lora-french", "prompt-pirate", "prompt-french"}
    assert len(set(first.values())) == 4
    states = [(e["name"], e["state"]) for e in events if e["event"] == "demo_run"]
    assert [s for _, s in states] == ["training", "done"] * 4
    assert any(e["event"] == "step" and e.get("demo_run") == "prompt-french" for e in events)
    for name, run_id in first.items():
        folder = runs.run_path(run_id)
        settings = json.loads((folder / "settings.json").read_text())["config"]
        assert (settings["model"], settings["steps"]) == (TINY, 2)
        assert f"{settings['method']}-{settings['dataset']}" == name
        assert runs.status(folder)["state"] == "done" and (folder / "adapter" / "adapter_model.safetensors").is_file()
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())

    events.clear()
    assert compose.ensure_demo_runs(model=TINY, steps=2, on_event=events.append, methods=chosen) == first
    assert [e["state"] for e in events] == ["reused"] * 4
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == folders

    # Only finished runs with the default options count: a failed run is replaced, another rank is skipped.
    force_status(runs.run_path(first["lora-pirate"]), "failed", error="test")
    other_rank = copy_run(first["lora-french"], options={"r": 4})
    third = compose.ensure_demo_runs(model=TINY, steps=2, methods=chosen)
    assert third["lora-pirate"] not in folders and third["lora-french"] == first["lora-french"] != other_rank
    assert {k: v for k, v in third.items() if k != "lora-pirate"} == {k: v for k, v in first.items()
                                                                      if k != "lora-pirate"}


def test_the_demo_trains_the_chosen_methods():
    """Every method that says how its runs combine has demo runs; a learner picks which ones to train."""
    assert set(compose.demo_runs()) == {f"{m}-{t}" for m in ("lora", "prompt", "prefix") for t in ("pirate", "french")}
    assert compose.demo_runs(["prefix"]) == {"prefix-pirate": ("prefix", "pirate"), "prefix-french": ("prefix", "french")}
    with pytest.raises(ExplorerError, match="Choose at least one method"):
        compose.demo_runs([])
    with pytest.raises(ExplorerError, match="not ia3"):
        compose.demo_runs(["lora", "ia3"])


# --------------------------------------------------------------------------- PEFT's other LoRA combinations


def combined_factors(comb):
    return [(layer.lora_A["combined"].weight.clone(), layer.lora_B["combined"].weight.clone())
            for layer in lora_layers(comb.model)]


def test_svd_is_the_best_low_rank_approximation_of_the_exact_sum(trained):
    """svd: Σ w_i·ΔW_i exactly, then truncated to rank max(r_i) = 8 by its SVD (Eckart–Young: the best rank-8
    approximation); the sum of two rank-8 updates has rank up to 16, so something is lost."""
    weights = (1.0, 0.5)
    comb = compose.build_lora_combination(trained["lora-pirate"], trained["lora-french"], "svd", weights)
    assert comb.info["rank"] == 8 and "density" not in comb.info
    lost = 0.0
    for layer in lora_layers(comb.model):
        exact = weights[0] * layer.get_delta_weight("a") + weights[1] * layer.get_delta_weight("b")
        u, s, vh = torch.linalg.svd(exact)
        best = u[:, :8] @ torch.diag(s[:8]) @ vh[:8]
        assert torch.allclose(layer.get_delta_weight("combined"), best, atol=1e-5, rtol=0)
        lost = max(lost, float(s[8:].max()))
    assert lost > 0, "the truncation drops a real part of the sum"


@pytest.mark.parametrize("how", ["dare_linear", "magnitude_prune"])
def test_pruning_types_keep_everything_at_density_1(trained, how):
    """DARE drops entries with probability 1 − density (rescaling the rest); magnitude pruning keeps the largest
    density share. At density 1 both are 'linear' exactly; below it they change the factors."""
    pair = (trained["lora-pirate"], trained["lora-french"])
    linear = combined_factors(compose.build_lora_combination(*pair, "linear"))
    full = compose.build_lora_combination(*pair, how, density=1.0)
    assert full.info["density"] == 1.0
    for (a, b), (la, lb) in zip(combined_factors(full), linear):
        assert torch.allclose(a, la, atol=1e-6, rtol=0) and torch.allclose(b, lb, atol=1e-6, rtol=0)
    half = combined_factors(compose.build_lora_combination(*pair, how, density=0.5))
    assert any(not torch.allclose(a, la) for (a, _), (la, _) in zip(half, linear))
    again = combined_factors(compose.build_lora_combination(*pair, how, density=0.5))
    assert all(torch.equal(a, x) and torch.equal(b, y) for (a, b), (x, y) in zip(half, again)), "seeded: reproducible"


def test_dare_ties_scores_with_its_density(trained):
    result = compose.compose(trained["lora-pirate"], trained["lora-french"], "dare_ties", examples=1,
                             max_new_tokens=2, sample_outputs=1, density=0.3)
    assert result["combined"] == {"rank": 8, "ranks": [8, 8], "density": 0.3}
    assert "dare_ties, density 0.3, weights 1 and 1" in result["summary"]


# --------------------------------------------------------------------------- prefix composition


def test_prefix_concat_has_both_prefixes_in_every_layer(trained):
    comb = prefix_concat.build_prefix_combination(trained["prefix-pirate"], trained["prefix-french"])
    assert comb.info == {"num_virtual_tokens": 10, "parts": [4, 6], "per_layer_keys": 10, "layers": 2}
    combined = prefix_concat.prefix_keys_values(comb.model, "combined")
    a = prefix_concat.prefix_keys_values(comb.model, "a")
    b = prefix_concat.prefix_keys_values(comb.model, "b")
    assert len(combined) == 2
    for (keys, values), (ka, va), (kb, vb) in zip(combined, a, b):
        assert keys.shape[2] == values.shape[2] == 4 + 6, "n1 + n2 virtual tokens in every layer"
        assert torch.equal(keys[:, :, :4], ka) and torch.equal(values[:, :, :4], va)
        assert torch.equal(keys[:, :, 4:], kb) and torch.equal(values[:, :, 4:], vb)


@pytest.mark.parametrize("keep", ["A", "B"])
def test_prefix_concat_gives_each_prefix_back_when_the_other_is_removed(trained, cache, keep):
    """Mask the other prefix's keys out and give the real tokens the positions they had behind one prefix
    (rotary embeddings: PEFT numbers them from the prefix length): the logits are that prefix's own."""
    from transformers import DynamicCache

    runs_ = {"A": trained["prefix-pirate"], "B": trained["prefix-french"]}
    comb = prefix_concat.build_prefix_combination(runs_["A"], runs_["B"])
    n_a, n_b = comb.info["parts"]
    layers = prefix_concat.prefix_keys_values(comb.model, "combined")
    kept = [1] * n_a + [0] * n_b if keep == "A" else [0] * n_a + [1] * n_b
    own = n_a if keep == "A" else n_b

    def masked(first_position):
        past = DynamicCache()
        for index, (keys, values) in enumerate(layers):
            past.update(keys, values, index)
        positions = torch.arange(first_position, first_position + IDS.shape[1]).unsqueeze(0)
        with torch.no_grad():
            return comb.model.get_base_model()(input_ids=IDS, attention_mask=torch.tensor([kept + [1] * IDS.shape[1]]),
                                               position_ids=positions, past_key_values=past).logits

    expected = logits(alone(cache, runs_[keep]))
    got = masked(own)
    assert torch.allclose(got, expected, atol=1e-5), float((got - expected).abs().max())
    # Behind both prefixes the real tokens start at n_A + n_B: the same keys are read from other positions.
    assert not torch.allclose(masked(n_a + n_b), expected, atol=1e-4)


def test_compose_scores_prefix_concatenation(trained):
    result = compose.compose(trained["prefix-pirate"], trained["prefix-french"], "kv_concat", examples=2,
                             max_new_tokens=4, sample_outputs=1)
    check_result(result, "prefix", "kv_concat")
    assert result["combined"]["per_layer_keys"] == 10
    assert result["summary"].startswith("Combining the two key/value prefixes (kv_concat, weights 1 and 1)")
