"""The project's own trainable modules: Houlsby adapters, the pooled classifier head, save/load."""

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from explorer.methods import own_modules as om

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "models_cache" / "tiny-random-llama"
CATALOG = sorted((ROOT / "explorer" / "catalog").glob("*.json"))
PLACES = {"both": (True, True), "attention": (True, False), "ffn": (False, True)}


def tiny_model():
    model = AutoModelForCausalLM.from_pretrained(TINY, use_safetensors=True)
    return model.eval()


def catalog_config(path):
    data = json.loads(path.read_text())
    data.pop("_catalog", None)
    return AutoConfig.for_model(data.pop("model_type"), **data)


def adapter_params(model):
    return {n: p for n, p in model.named_parameters() if om.ADAPTER_NAME in n}


def randomize_up(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter_params(model).items():
            if ".up." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def random_ids(vocab, shape=(2, 9), seed=0):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def small_random(model_type):
    """A 2-layer, width-32 random model of the given architecture, on CPU."""
    kwargs = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, vocab_size=128, max_position_embeddings=64,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if model_type == "gpt2":
        kwargs = dict(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64, bos_token_id=0, eos_token_id=0)
    if model_type == "mixtral":
        kwargs.update(num_local_experts=4, num_experts_per_tok=2)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs)).eval()


def test_zero_init_adapters_leave_logits_unchanged_then_random_up_changes_them():
    model = tiny_model()
    ids = random_ids(model.config.vocab_size)
    with torch.no_grad():
        base = model(ids).logits
    torch.manual_seed(0)
    names = om.add_houlsby_adapters(model, bottleneck_dim=8)
    assert names == [f"model.layers.{i}.{s}.houlsby_adapter" for i in range(2) for s in ("self_attn", "mlp")]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base)
        randomize_up(model)
        assert not torch.allclose(model(ids).logits, base, atol=1e-4)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gemma2", "mistral", "mixtral", "phi3", "gpt2"])
def test_adapters_run_on_each_architecture(model_type):
    model = small_random(model_type)
    ids = random_ids(128)
    with torch.no_grad():
        base = model(ids).logits
        names = om.add_houlsby_adapters(model, bottleneck_dim=4)
        assert len(names) == 4
        assert torch.equal(model(ids).logits, base)
        for after_attention, after_ffn in [(True, False), (False, True)]:
            randomize_up(model)  # both kinds are present; zero one kind to test the other alone
            for name, p in adapter_params(model).items():
                is_attn = ".attn." in name or ".self_attn." in name
                if ".up." in name and (is_attn != after_attention):
                    p.zero_()
            assert not torch.allclose(model(ids).logits, base, atol=1e-4), (after_attention, after_ffn)


def test_exact_parameter_count_on_the_tiny_model():
    for place, (att, ffn) in PLACES.items():
        model = tiny_model()
        om.add_houlsby_adapters(model, 8, after_attention=att, after_ffn=ffn)
        got = sum(p.numel() for p in adapter_params(model).values())
        assert got == om.houlsby_parameter_count(32, 8, 2, att, ffn), place


@pytest.mark.parametrize("path", CATALOG, ids=[p.stem for p in CATALOG])
def test_exact_parameter_count_on_meta_for_every_catalog_model(path):
    config = catalog_config(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    base_dtype = next(model.parameters()).dtype
    d, n = config.hidden_size, config.num_hidden_layers
    for place, (att, ffn) in PLACES.items():
        names = om.add_houlsby_adapters(model, 64, after_attention=att, after_ffn=ffn)
        assert len(names) == n * (att + ffn)
        params = adapter_params(model)
        assert all(p.device.type == "meta" and p.dtype == base_dtype for p in params.values())
        assert sum(p.numel() for p in params.values()) == om.houlsby_parameter_count(d, 64, n, att, ffn), place
        for name in names:  # remove again for the next placement
            parent, _, child = name.rpartition(".")
            sub = model.get_submodule(parent)
            delattr(sub, child)
            sub._forward_hooks.clear()


def test_missing_blocks_raise_a_clear_error():
    with pytest.raises(ValueError, match="Cannot find the decoder blocks"):
        om.add_houlsby_adapters(torch.nn.Sequential(torch.nn.Linear(4, 4)), 2)


def test_adding_twice_is_refused():
    model = tiny_model()
    om.add_houlsby_adapters(model, 4)
    with pytest.raises(ValueError, match="already has"):
        om.add_houlsby_adapters(model, 4)


def test_training_changes_only_adapter_params():
    model = tiny_model()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    om.add_houlsby_adapters(model, 8)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if om.ADAPTER_NAME not in n}
    adapter_before = {n: p.detach().clone() for n, p in adapter_params(model).items()}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(adapter_before)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = random_ids(model.config.vocab_size, (4, 12))
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model(ids, labels=ids).loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in base_before:
            assert torch.equal(p, base_before[n]), n
        else:
            assert not torch.equal(p, adapter_before[n]), n


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    om.add_houlsby_adapters(model, 8)
    randomize_up(model)
    ids = random_ids(model.config.vocab_size)
    with torch.no_grad():
        want = model(ids).logits
    config = {"method": "houlsby", "bottleneck_dim": 8, "after_attention": True, "after_ffn": True}
    om.save_trainable(model, tmp_path, config)
    assert sorted(os.listdir(tmp_path)) == [om.WEIGHTS_FILE, om.CONFIG_FILE]

    fresh = tiny_model()
    torch.manual_seed(123)
    om.add_houlsby_adapters(fresh, 8)
    assert om.load_trainable(fresh, tmp_path) == config
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, want)

    data = (tmp_path / om.WEIGHTS_FILE).read_bytes()
    (tmp_path / om.WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or incomplete"):
        om.load_trainable(fresh, tmp_path)


def test_load_rejects_mismatches(tmp_path):
    model = tiny_model()
    om.add_houlsby_adapters(model, 8)
    for n, p in model.named_parameters():
        p.requires_grad_(om.ADAPTER_NAME in n)
    om.save_trainable(model, tmp_path, {"bottleneck_dim": 8})
    other = tiny_model()
    with pytest.raises(ValueError, match="lacks"):
        om.load_trainable(other, tmp_path)
    om.add_houlsby_adapters(other, 4)
    with pytest.raises(ValueError, match="Shape mismatch"):
        om.load_trainable(other, tmp_path)
    (tmp_path / om.CONFIG_FILE).write_text(json.dumps({"bottleneck_dim": 4}))
    with pytest.raises(ValueError, match="different saves"):
        om.load_trainable(model, tmp_path)


def test_head_classifier_shapes_padding_and_gradients():
    torch.manual_seed(0)
    clf = om.HeadClassifier(tiny_model(), num_classes=3)
    short = random_ids(clf.backbone.config.vocab_size, (1, 5), seed=1)
    long = random_ids(clf.backbone.config.vocab_size, (1, 8), seed=2)
    pad = clf.backbone.config.pad_token_id
    ids = torch.cat([torch.cat([short, torch.full((1, 3), pad)], dim=1), long])
    mask = torch.tensor([[1] * 5 + [0] * 3, [1] * 8])
    logits = clf(ids, mask)
    assert logits.shape == (2, 3)
    alone = clf(short, torch.ones_like(short))
    torch.testing.assert_close(logits[0], alone[0], rtol=0, atol=1e-5)

    logits.sum().backward()
    assert all(p.grad is None for p in clf.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in clf.head.parameters())
    assert {n for n, p in clf.named_parameters() if p.requires_grad} == {"head.classifier.weight",
                                                                          "head.classifier.bias"}


def test_pooled_head_ignores_padding_positions():
    head = om.PooledClassifierHead(4, 2)
    h = torch.randn(1, 3, 4)
    mask = torch.tensor([[1, 1, 0]])
    h2 = h.clone()
    h2[0, 2] = 1000.0
    torch.testing.assert_close(head(h, mask), head(h2, mask))
    torch.testing.assert_close(head(h, mask), head(h[:, :2], None))
