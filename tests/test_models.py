"""Registry, safe loading and generation on the tiny model; bad input gets clear messages."""

import json
import shutil

import pytest

from explorer import generate
from explorer.errors import ExplorerError
from explorer.models import loading, provision
from explorer.models import registry as models


def test_registry_lists_shipped_models_with_real_sizes(cache):
    rows = {row["name"]: row for row in map(models.describe, models.registry(cache).values())}
    assert rows[provision.BUNDLED_NAME]["parameters"] == 134_515_008
    assert rows[provision.BUNDLED_NAME]["layers"] == 30 and rows[provision.BUNDLED_NAME]["hidden_size"] == 576
    assert rows[provision.TINY_NAME]["vocab_size"] == 49152
    assert rows[provision.TINY_NAME]["architecture"] == "LlamaForCausalLM"


def test_tiny_model_loads_and_generates(cache):
    loaded = loading.load(provision.TINY_NAME, cache)
    assert sum(p.numel() for p in loaded.model.parameters()) < 2_000_000
    result = generate.generate(loaded, "Hello there", max_new_tokens=5)
    assert result.new_tokens == 5  # random weights rarely emit end-of-turn in 5 steps; seed 0 does not
    assert loading.is_loaded(loaded.entry)


def test_local_folder_in_cache_is_listed(cache, tmp_path):
    shutil.copytree(cache / provision.TINY_NAME, tmp_path / "my-model")
    assert models.registry(tmp_path)["my-model"].kind == "local"
    assert models.resolve(str(tmp_path / "my-model")).kind == "local"


@pytest.mark.parametrize("name", ["", "   ", "no-such-model", "../../etc"])
def test_unknown_or_empty_model_names(name, cache):
    with pytest.raises(ExplorerError, match="model"):
        models.resolve(name, cache)


def test_empty_prompt_is_refused():
    with pytest.raises(ExplorerError, match="empty"):
        generate.check_prompt("  \n ")


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "2.5", "abc", "100000"])
def test_bad_max_new_tokens(value):
    with pytest.raises(ExplorerError, match="max new tokens"):
        generate.check_max_new_tokens(value)


def _folder_with(tmp_path, cache, keep_weights: bool):
    folder = tmp_path / "m"
    shutil.copytree(cache / provision.TINY_NAME, folder)
    if not keep_weights:
        (folder / "model.safetensors").unlink()
    return folder


def test_folder_without_safetensors(tmp_path, cache):
    folder = _folder_with(tmp_path, cache, keep_weights=False)
    with pytest.raises(ExplorerError, match="no .safetensors"):
        models.resolve(str(folder))


def test_folder_with_only_a_pickle_is_never_unpickled(tmp_path, cache, monkeypatch):
    import torch

    folder = _folder_with(tmp_path, cache, keep_weights=False)
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle, and never read")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called on a pickle"))
    with pytest.raises(ExplorerError, match="pickle"):
        loading.load(str(folder))


def test_remote_code_is_refused(tmp_path, cache):
    folder = _folder_with(tmp_path, cache, keep_weights=True)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExplorerError, match="remote code"):
        loading.load(str(folder))


def test_hub_ids_are_refused_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExplorerError, match="offline"):
        models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct")
