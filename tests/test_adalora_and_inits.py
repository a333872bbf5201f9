"""AdaLoRA's training hooks (its schedule, its rank allocation after each step, PEFT's orthogonal regularisation in
the training loss) and LoRA's data-driven initialisations (EVA), on the tiny model with a few steps. The counts
and FLOPs at the defaults are the registry-wide tests' (tests/test_calculator.py)."""

import json
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from conftest import TINY, shallow
from safetensors.torch import load_file
from test_calculator import measured_flops

from explorer import calculator
from explorer.calculator import exact
from explorer.costs.flops import count_flops
from explorer.data import chat, sources, tasks
from explorer.errors import ExplorerError
from explorer.evaluate import loss_on_targets
from explorer.methods import METHODS, adalora
from explorer.methods.base import TrainingData
from explorer.models import loading
from explorer.train import loop as training
from explorer.train.config import TrainConfig


def memorised_run(tmp_path, method, options, steps=4, lr=3e-2, **inspect):
    """A few steps on four memorised rows (the tiny random model learns those fast); the summary and run folder."""
    rows = tasks.load_examples("pirate", "train")[:4]
    data = tmp_path / "memorise.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = TrainConfig(model=TINY, method=method, dataset=str(data), steps=steps, batch_size=4, seq_len=64,
                      eval_examples=0, max_new_tokens=4, eval_every=100, learning_rate=lr)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp_path))
    return training.train(cfg, options, run_dir, **inspect), run_dir


def tiny_batch(tokenizer, n=3):
    encoded, _ = chat.encode_dataset(tokenizer, sources.load_dataset("pirate")[0][:n], 64)
    return chat.collate(encoded, chat.pad_id(tokenizer))


@pytest.mark.parametrize("model", ["smollm2-135m", "gpt2"])
def test_adalora_counts_init_r_triplets_and_flops_like_lora_at_init_r(model):
    spec = shallow(model, 2)
    options = METHODS["adalora"].parse_options({"init_r": 6, "target_r": 2, "target_preset": "q,v" if model !=
                                                "gpt2" else "attention", "lora_dropout": 0.1})
    result = calculator.calculate(spec, "adalora", options)
    assert result.agrees, (result.exact_counts, result.trainable_formula)
    first = result.terms[0]
    m = spec.arch.by_name[adalora.TUNER.targets(spec, options)[0]]
    assert first.count == 2 * 6 * (m.in_features + m.out_features + 1) and "6·(" in first.expression
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = exact.build_on_meta(spec, "adalora", options)
    assert measured_flops(built, 12) == count_flops(spec.arch, METHODS["adalora"].adaptation(spec, options), 12)


def test_adalora_trains_reallocates_ranks_to_target_r_and_saves_only_the_kept_ranks(tmp_path, cache):
    seen = {}
    options = {"init_r": 6, "target_r": 2}
    summary, run_dir = memorised_run(tmp_path, "adalora", options,
                                     inspect_model=lambda stage, model: seen.__setitem__(stage, (
                                         adalora.ranks_kept(model), model)))
    assert summary["steps"] == 4 and summary["train_loss_last"] < summary["train_loss_first"], summary
    assert summary["trainable_params"] == summary["calculator_trainable_params"]
    layers = len(seen["before"][0])
    assert layers == 14  # every linear of the tiny model's two blocks
    # E (the singular values) starts at zero: PEFT's init. After the last step update_and_allocate has masked the
    # budget down to target_r per layer on average, and the total is exactly that budget.
    assert sum(seen["before"][0].values()) == 0
    kept = seen["after"][0]
    assert sum(kept.values()) == 2 * layers and max(kept.values()) <= 6, kept
    model = seen["after"][1]
    pattern = model.peft_config["default"].rank_pattern
    assert pattern and sum(sum(mask) for mask in pattern.values()) == 2 * layers
    # Saved: PEFT drops the masked triplets (its rank_pattern), and the run reloads to the logits it trained to.
    saved = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert sum(t.shape[0] for n, t in saved.items() if "lora_E" in n) == 2 * layers
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    reloaded = loading.load_with_adapter(TINY, METHODS["adalora"], METHODS["adalora"].parse_options(options),
                                         "fp32", run_dir / "adapter", "the test run").model
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-4)


def test_adalora_training_loss_is_peft_loss_with_its_orthogonal_regularisation(cache):
    method = METHODS["adalora"]
    options = method.parse_options({"init_r": 4, "target_r": 2, "orth_reg_weight": 0.3})
    loaded = loading.load_fresh(TINY, method, options)
    model = method.apply_for_training(loaded.model, loaded.spec, options, TrainingData(4, lambda n: []))
    assert model.peft_config["default"].total_step == 4, "the run's steps are the schedule's length"
    batch = tiny_batch(loaded.tokenizer)
    with torch.no_grad():
        language, training_loss = float(loss_on_targets(model, batch)), float(method.training_loss(model, batch))
        penalties = [torch.linalg.matrix_norm(p @ p.T - torch.eye(p.shape[0]) if ".lora_A." in n
                                              else p.T @ p - torch.eye(p.shape[1]))
                     for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    expected = 0.3 * float(sum(penalties)) / len(penalties)
    assert expected > 0.1 and abs(training_loss - language - expected) < 1e-4, (training_loss, language, expected)


@pytest.mark.parametrize("values, message", [
    ({"init_r": 4, "target_r": 4}, r"^AdaLoRA prunes ranks from init_r down to target_r: target_r \(4\) must be "
                                   r"smaller than init_r \(4\)\.$"),
    ({"tinit": 3, "tfinal": 1}, r"^AdaLoRA's schedule leaves no step to reallocate ranks in: tinit \(3\) must be "
                                r"below the run's steps minus tfinal \(4 − 1\)\. Lower tinit or tfinal, or train "
                                r"more steps\.$"),
])
def test_adalora_refuses_what_peft_cannot_schedule_in_one_line(values, message, cache):
    method = METHODS["adalora"]
    options = method.parse_options(values)
    loaded = loading.load_fresh(TINY, method, options)
    with pytest.raises(ExplorerError, match=message):
        method.validate(loaded.spec, options)
        method.apply_for_training(loaded.model, loaded.spec, options, TrainingData(4, lambda n: []))


def test_eva_starts_a_from_the_inputs_singular_vectors_and_trains(tmp_path, cache):
    """EVA's A rows are the top right singular vectors of each layer's inputs: orthonormal, unlike the default
    Kaiming-uniform start; B starts at zero, so the model starts unchanged; the run trains, keeps LoRA's count and
    reloads as a plain LoRA adapter."""
    seen = {}
    options = {"init_lora_weights": "eva", "r": 4, "eva_batches": 2, "eva_tau": 0.9}
    summary, run_dir = memorised_run(tmp_path, "lora", options, inspect_model=lambda stage, model: seen.__setitem__(
        stage, ({n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" in n}, model)))
    assert summary["train_loss_last"] < summary["train_loss_first"], summary
    assert summary["trainable_params"] == summary["calculator_trainable_params"]
    start = seen["before"][0]
    a_start = {n: p for n, p in start.items() if ".lora_A." in n}
    assert len(a_start) == 14 and all(p.shape[0] == 4 for p in a_start.values())
    for name, a in a_start.items():
        assert torch.allclose(a @ a.T, torch.eye(4), atol=1e-4), name
        assert not torch.any(start[name.replace(".lora_A.", ".lora_B.")]), "B starts at zero"
    default = METHODS["lora"].apply(loading.load_fresh(TINY).model, specs_of(TINY), METHODS["lora"].parse_options(
        {"r": 4}))
    a_default = next(p for n, p in default.named_parameters() if ".lora_A." in n)
    assert not torch.allclose(a_default @ a_default.T, torch.eye(4), atol=0.1), "the default start is not EVA's"
    saved = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert saved["init_lora_weights"] == "eva"
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    reloaded = loading.load_with_adapter(TINY, METHODS["lora"], METHODS["lora"].parse_options(options), "fp32",
                                         run_dir / "adapter", "the test run").model
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, seen["after"][1].eval()(input_ids=ids).logits, atol=1e-4)


def specs_of(name):
    return loading.load_fresh(name).spec


@pytest.mark.parametrize("init, message", [("corda", r"^CorDA \(PEFT's preprocess_corda\) .* not offered\.$"),
                                           ("lora_ga", r"^LoRA-GA \(PEFT's preprocess_loraga\) .* not offered\.$")])
def test_inits_that_change_the_base_weights_are_refused_in_one_line(init, message):
    with pytest.raises(ExplorerError, match=message):
        calculator.from_request("smollm2-135m", "lora", {"init_lora_weights": init}, exact_mode="skip")


@pytest.mark.parametrize("r, message", [
    (1024, r"^EVA computes 1024 components \(r·eva_rho\) per layer from the answer tokens of a batch, and this data's "
           r"batches hold at most \d+: raise batch_size, or lower r or eva_rho\.$"),
    (64, r"^PEFT's EVA: n_components=64 invalid for n_features=32"),
])
def test_eva_refuses_more_components_than_its_batches_or_widths_hold_in_one_line(r, message, cache):
    """PEFT would cycle the batches for ever when none holds enough answer tokens for the SVD."""
    method = METHODS["lora"]
    loaded = loading.load_fresh(TINY)
    batches = [tiny_batch(loaded.tokenizer, 4)]
    options = method.parse_options({"init_lora_weights": "eva", "r": r})
    with pytest.raises(ExplorerError, match=message):
        method.apply_for_training(loaded.model, loaded.spec, options, TrainingData(3, lambda n: batches[:n]))


def test_eva_that_does_not_settle_within_its_passes_is_refused_in_one_line(cache, monkeypatch):
    """PEFT cycles the batches until every layer's components settle, without end: the run stops after
    EVA_CYCLES passes over them (0 here, so the refusal comes at the first pass, whatever the machine)."""
    from explorer.methods import lora

    monkeypatch.setattr(lora, "EVA_CYCLES", 0)
    method = METHODS["lora"]
    loaded = loading.load_fresh(TINY)
    batches = [tiny_batch(loaded.tokenizer, 4)]
    options = method.parse_options({"init_lora_weights": "eva", "r": 4, "eva_tau": 0.5})
    with pytest.raises(ExplorerError, match=r"^EVA's components had not settled after 0 passes over 1 training batch "
                                            r"\(eva_tau 0\.5\): lower eva_tau, or raise eva_batches\.$"):
        method.apply_for_training(loaded.model, loaded.spec, options, TrainingData(3, lambda n: batches[:n]))


def test_gaussian_start_draws_a_with_std_one_over_r(cache):
    """PEFT's init_lora_weights="gaussian": A ~ N(0, 1/r), B = 0 (peft.tuners.lora.layer.reset_lora_parameters)."""
    method = METHODS["lora"]
    loaded = loading.load_fresh(TINY)
    torch.manual_seed(0)
    model = method.apply(loaded.model, loaded.spec, method.parse_options({"init_lora_weights": "gaussian", "r": 4}))
    a = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if ".lora_A." in n])
    assert a.numel() > 1000 and abs(float(a.std()) - 0.25) < 0.03, float(a.std())
    assert not any(bool(p.any()) for n, p in model.named_parameters() if ".lora_B." in n)


def test_a_stop_asked_while_eva_reads_its_batches_ends_it_at_the_next_pass(cache):
    method = METHODS["lora"]
    loaded = loading.load_fresh(TINY)
    batches = [tiny_batch(loaded.tokenizer, 4)]
    options = method.parse_options({"init_lora_weights": "eva", "r": 4})
    asked = []
    model = method.apply_for_training(loaded.model, loaded.spec, options, TrainingData(
        3, lambda n: batches[:n], should_stop=lambda: bool(asked.append(1)) or len(asked) > 1))
    assert len(asked) == 2, "EVA's first pass ran, the second found the stop"
    a = next(p for n, p in model.named_parameters() if ".lora_A." in n).detach()
    assert not torch.allclose(a @ a.T, torch.eye(4), atol=0.1), "EVA never wrote its start"
