"""Real fine-tunes of every method on the tiny model: only the method's parameters change, loss falls,
saved runs reload, stop keeps a consistent run."""

import json

import pytest
import torch
from conftest import TINY

from explorer.data import tasks
from explorer.methods import METHODS
from explorer.methods.own_modules import load_trainable
from explorer.models import loading
from explorer.models import specs as model_specs
from explorer.train import loop as training
from explorer.train import runs
from explorer.train.config import TrainConfig


def config(method, dataset="pirate", **overrides):
    """Training as the app trains, without the watch's and the forgetting probe's generations (a fifth of these
    tests' time; tests/test_timeline.py and tests/test_guard_rails.py cover them)."""
    values = dict(model=TINY, method=method, dataset=dataset, steps=5, batch_size=4, seq_len=64,
                  eval_examples=2, max_new_tokens=4, eval_every=5, watch_every=0, probe_examples=0)
    values.update(overrides)
    return TrainConfig(**values)


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def run(tmp_path, cfg, options=None, **kwargs):
    import tempfile
    from pathlib import Path

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp_path))
    return training.train(cfg, options or {}, run_dir, **kwargs), run_dir


def memorisation_set(tmp_path):
    rows = tasks.load_examples("pirate", "train")[:4]
    path = tmp_path / "memorise.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


# A 2-layer, 32-wide random model learns slowly; these rates make 25 steps enough for every method.
# 25 steps on four memorised rows want a rate far above a real run's: 30× the method's own default, except where
# measured otherwise (a new method is covered at 30× without an edit here).
MEMORISE_LR_FACTOR = 30
MEMORISE_LR_OVERRIDES = {"full": 3e-3, "ia3": 0.3, "prompt": 0.3, "loraplus": 1e-2, "fourierft": 3e-2, "road": 3e-2,
                         "adalora": 3e-2}


def memorise_lr(method: str) -> float:
    return MEMORISE_LR_OVERRIDES.get(method, MEMORISE_LR_FACTOR * METHODS[method].default_lr)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_only_its_parameters_and_its_loss_falls(tmp_path, cache, method):
    """One real run per method (25 steps on four memorised rows, scored on the held-out one): the loss falls,
    only the method's parameters change, the saved run reloads to the logits it trained to."""
    seen = {}
    options = {"head_type": "lm"} if method == "head" else {}
    cfg = config(method, memorisation_set(tmp_path), steps=25, eval_examples=1, eval_every=100, score="contains",
                 learning_rate=memorise_lr(method))
    summary, run_dir = run(tmp_path, cfg, options,
                           inspect_model=lambda stage, model: seen.__setitem__(stage, (snapshot(model), model)))
    assert summary["steps"] == 25 and summary["train_loss_last"] < 0.9 * summary["train_loss_first"], summary
    assert summary["diverged"] is False and summary["divergence"] is None
    assert summary["task_score_base"] is not None and summary["task_score_adapted"] is not None, "scored"
    before, _ = seen["before"]
    after, model = seen["after"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable, "the method trains something"
    assert summary["trainable_params"] == summary["calculator_trainable_params"]
    for name, value in before.items():
        if name in trainable:
            continue
        assert torch.equal(value, after[name]), f"{method} changed frozen {name}"
    if method != "full":
        frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad)
        assert frozen > 0
    changed = [name for name in trainable if not torch.equal(before[name], after[name])]
    assert changed, f"{method}: no trainable parameter changed"
    assert (run_dir / "adapter").is_dir() and json.loads((run_dir / "summary.json").read_text())["steps"] == 25
    # The saved run reloads onto a fresh (original) base to the logits it trained to.
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    reloaded = loading.load_with_adapter(TINY, METHODS[method], METHODS[method].parse_options(options), "fp32",
                                         run_dir / "adapter", "the test run").model
    trained = logits_of(model.eval(), ids)
    assert torch.allclose(logits_of(reloaded, ids), trained, atol=1e-4 * max(1.0, float(trained.abs().max()) / 10))
    assert not list(run_dir.glob(".tmp-*")), "no scratch or partial files are left"


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_saved_lora_reloads_with_peft_outside_the_app(tmp_path, cache):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    captured = {}
    summary, run_dir = run(tmp_path, config("lora", learning_rate=0.05),
                           inspect_model=lambda stage, m: captured.__setitem__(stage, logits_of(m, ids)))
    saved = {p.name for p in (run_dir / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= saved and not any(
        name.endswith((".bin", ".pt", ".pkl")) for name in saved)
    base = AutoModelForCausalLM.from_pretrained(cache / TINY, use_safetensors=True)
    reloaded = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    assert torch.allclose(logits_of(reloaded, ids), captured["after"], atol=1e-5)
    assert not torch.allclose(captured["before"], captured["after"], atol=1e-4)


@pytest.mark.parametrize("method, options", [("adapter", {"bottleneck_dim": 8}), ("head", {"head_type": "lm"})])
def test_saved_own_method_reloads_through_the_project_loader(tmp_path, cache, method, options):
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    captured = {}
    _, run_dir = run(tmp_path, config(method, learning_rate=0.05), options,
                     inspect_model=lambda stage, m: captured.__setitem__(stage, logits_of(m, ids)))
    spec_model = AutoModelForCausalLM.from_pretrained(cache / TINY, use_safetensors=True)
    prepared = METHODS[method].apply(spec_model, model_specs.resolve(TINY),
                                     METHODS[method].parse_options(options))
    saved = load_trainable(prepared, str(run_dir / "adapter"))
    assert saved["method"] == method
    assert torch.allclose(logits_of(prepared.eval(), ids), captured["after"], atol=1e-5)


def test_stop_mid_run_keeps_a_consistent_run(tmp_path, cache):
    steps_done = []
    summary, run_dir = run(tmp_path, config("lora", steps=50),
                           on_event=lambda e: steps_done.append(e["step"]) if e["event"] == "step" else None,
                           should_stop=lambda: len(steps_done) >= 3)
    assert summary["stopped"] and summary["steps"] == 3
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(run_dir.glob(".tmp-*")), "no half-written files are left"


def test_bad_settings_are_clear(tmp_path, cache):
    from explorer.errors import ExplorerError

    with pytest.raises(ExplorerError, match="learning_rate"):
        training.TrainConfig.parse({"learning_rate": "nan"})
    with pytest.raises(ExplorerError, match="Unknown dataset"):
        run(tmp_path, config("lora", dataset="no-such-dataset"))
    with pytest.raises(ExplorerError, match="needs labelled text .*'pirate' is chat data"):
        run(tmp_path, config("head"), {"head_type": "classifier"})
    with pytest.raises(ExplorerError, match="LoRA needs chat rows .*'topics' is labelled text"):
        run(tmp_path, config("lora", dataset="topics"))
    with pytest.raises(ExplorerError, match="not a run id"):
        runs.run_path("../../etc")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_qlora_base_memory_equals_the_loaded_4bit_model(cache, precision):
    """The Calculator's QLoRA weight bytes are what bitsandbytes holds: packed NF4 weights, their
    (double-quantized) scales, and the un-quantized rest in the load's dtype."""
    from explorer.costs import memory

    loaded = loading.load_fresh(TINY, METHODS["qlora"], METHODS["qlora"].parse_options({}), precision)
    model, spec = loaded.model, loaded.spec
    held = 0
    for p in model.parameters():
        held += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)
        if state is not None:
            held += state.absmax.numel() * state.absmax.element_size()
            if state.nested:
                held += state.state2.absmax.numel() * state.state2.absmax.element_size()
                held += state.offset.numel() * state.offset.element_size()
    assert any(getattr(p, "quant_state", None) is not None for p in model.parameters())
    assert memory.base_weight_bytes(spec.arch, precision, nf4=True) == pytest.approx(held, rel=1e-4)


def test_qlora_load_leaves_no_tensor_in_the_checkpoint_memory_map(cache):
    """Views into the memory-mapped float checkpoint would keep every page quantization read resident."""
    from pathlib import Path

    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs Linux /proc")
    model = loading.load_fresh(TINY, METHODS["qlora"], METHODS["qlora"].parse_options({}), "fp32").model
    mapped = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in maps.read_text().splitlines()
              if line.rstrip().endswith(".safetensors")]
    inside = [name for name, p in model.named_parameters() if any(a <= p.data_ptr() < b for a, b in mapped)]
    assert inside == []
