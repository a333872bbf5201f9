"""The bundled model converts once, atomically, and answers like the real SmolLM2."""

import pytest

from explorer import generate
from explorer.errors import ExplorerError
from explorer.models import loading, provision
from explorer.models import registry as models


def test_interrupted_conversion_leaves_nothing_loadable_then_converts_cleanly(cache, tmp_path, monkeypatch):
    """The one atomic-build path both shipped models go through, on the tiny model (seconds, where the bundled
    model's de-quantization takes about a minute each time; `make test` converts that one for real first)."""
    (tmp_path / provision.BUNDLED_NAME).symlink_to(cache / provision.BUNDLED_NAME)  # the tiny one's tokenizer

    def crash_midway(tokenizer, folder):
        assert (folder / "model.safetensors").exists()  # the weights were already written
        raise RuntimeError("simulated crash during conversion")

    monkeypatch.setattr(provision, "_save_tokenizer", crash_midway)
    with pytest.raises(RuntimeError, match="simulated crash"):
        provision.ensure_tiny(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [provision.BUNDLED_NAME], "nothing half-written is left"

    # A process killed with SIGKILL cannot clean up: it leaves its temporary folder behind.
    stale = tmp_path / f".tmp-{provision.TINY_NAME}-killed"
    stale.mkdir()
    (stale / "config.json").write_text('{"model_type": "llama"}')
    (stale / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")  # truncated
    assert stale.name not in models.registry(tmp_path)
    with pytest.raises(ExplorerError):
        models.resolve(stale.name, tmp_path)

    monkeypatch.undo()
    folder = provision.ensure_tiny(tmp_path)
    assert not stale.exists(), "the next conversion removes what a killed one left"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([provision.BUNDLED_NAME, provision.TINY_NAME])
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (folder / name).is_file()
    assert loading.load_fresh(provision.TINY_NAME, precision="fp32", cache=tmp_path) is not None


def test_bundled_model_reloads_from_cache_and_knows_paris(cache):
    loaded = loading.load(provision.BUNDLED_NAME, cache)
    assert loaded.entry.location == str(cache / provision.BUNDLED_NAME)
    assert "quantization_config" not in (cache / provision.BUNDLED_NAME / "config.json").read_text()
    assert sum(p.numel() for p in loaded.model.parameters()) == 134_515_008  # SmolLM2-135M's published size
    result = generate.generate(loaded, "What is the capital of France?", max_new_tokens=24)
    assert "Paris" in result.completion
    assert result.new_tokens > 0 and result.seconds > 0
