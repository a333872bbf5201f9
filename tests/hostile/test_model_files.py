"""Hostile model folders (issue 6): pickle weights, remote code, bad config.json, corrupt or lying
safetensors. Each is refused with a clear message before anything is loaded."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest

from explorer.errors import ExplorerError
from explorer.models import loading, provision, safe_files
from explorer.models import registry as models

# --------------------------------------------------------------------------- 1. model files


@pytest.fixture
def model_copy(cache, tmp_path) -> Path:
    """A fresh copy of the tiny model (a new path, so no cached load can answer for it)."""
    folder = tmp_path / "model"
    shutil.copytree(cache / provision.TINY_NAME, folder)
    return folder


class _Tripwire:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("file_name", ["pytorch_model.bin", "model.pt", "weights.pkl"])
def test_pickle_only_folder_is_refused_and_never_unpickled(model_copy, tmp_path, monkeypatch, file_name):
    import torch

    (model_copy / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (model_copy / file_name).write_bytes(pickle.dumps(_Tripwire(marker)))
    fail = lambda *a, **k: pytest.fail("a pickle was loaded")  # noqa: E731
    monkeypatch.setattr(torch, "load", fail)
    monkeypatch.setattr(pickle, "load", fail)
    monkeypatch.setattr(pickle, "loads", fail)
    for attempt in (lambda: models.check_folder(model_copy), lambda: loading.load(str(model_copy))):
        with pytest.raises(ExplorerError, match="holds only pickle weights") as error:
            attempt()
        assert file_name in str(error.value) and "safetensors" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("file_name", ["config.json", "tokenizer_config.json"])
def test_auto_map_remote_code_is_refused(model_copy, file_name):
    path = model_copy / file_name
    config = json.loads(path.read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.Model", "AutoTokenizer": ["evil.Tok", None]}
    path.write_text(json.dumps(config))
    for attempt in (lambda: models.check_folder(model_copy), lambda: loading.load(str(model_copy))):
        with pytest.raises(ExplorerError, match=r"asks for remote code \(auto_map\)") as error:
            attempt()
        assert file_name in str(error.value)


@pytest.mark.parametrize("raw, message", [
    (b'\xff\xfe{\x00"\x00m\x00', "is not valid JSON: 'utf-8' codec can't decode"),
    ('{"model_type": "llama", "name": "caf\u00e9"}'.encode("latin-1"), "is not valid JSON: 'utf-8' codec"),
    (b"[1, 2]", "must hold a JSON object"),
    (b"", "is not valid JSON"),
])
def test_bad_config_json_bytes(model_copy, raw, message):
    (model_copy / "config.json").write_bytes(raw)
    for attempt in (lambda: models.check_folder(model_copy), lambda: loading.load(str(model_copy))):
        with pytest.raises(ExplorerError, match=message) as error:
            attempt()
        assert "config.json" in str(error.value)


def _split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def _write(path: Path, header: dict | bytes, body: bytes) -> None:
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + body)


def _first_tensor(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


def _last_tensor(header: dict) -> str:
    return max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])


def _truncate_half(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _truncate_to(size):
    return lambda path: path.write_bytes(path.read_bytes()[:size])


def _length_beyond_file(path):
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(raw) * 3) + raw[8:])


def _length_over_cap(path):
    # A sparse 120 MB file (no real disk use): the claimed length fits the file but not the format's cap.
    with path.open("r+b") as handle:
        handle.write(struct.pack("<Q", 110_000_000))
        handle.truncate(120_000_000)


def _header_not_json(path):
    header, body = _split(path)
    _write(path, b"\x00\xffnot json at all" + b" " * 40, body)


def _header_not_object(path):
    _, body = _split(path)
    _write(path, b"[1, 2, 3]", body)


def _offsets_beyond(path):
    header, body = _split(path)
    name = _last_tensor(header)
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin, end + 10**12]
    _write(path, header, body)


def _shape_lies(path):
    header, body = _split(path)
    header[_first_tensor(header)]["shape"][-1] += 1
    _write(path, header, body)


def _unknown_dtype(path):
    header, body = _split(path)
    header[_first_tensor(header)]["dtype"] = "F33"
    _write(path, header, body)


def _negative_shape(path):
    header, body = _split(path)
    header[_first_tensor(header)]["shape"] = [-1, 32]
    _write(path, header, body)


def _overlapping(path):
    header, body = _split(path)
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    small = [k for k in names if header[k]["shape"] == [32]][:2]  # two norm weights of equal size
    header[small[1]]["data_offsets"] = header[small[0]]["data_offsets"]
    _write(path, header, body)


def _trailing_garbage(path):
    with path.open("ab") as handle:
        handle.write(b"\x00" * 1000)


def _zero_length_header(path):
    path.write_bytes(struct.pack("<Q", 0) + b"{}")


@pytest.mark.parametrize("corrupt, reason", [
    (_truncate_half, "ends at byte"),
    (_truncate_to(5), "too short for the 8-byte header length"),
    (_truncate_to(0), "too short for the 8-byte header length"),
    (_truncate_to(500), "its header claims"),
    (_length_beyond_file, "its header claims"),
    (_length_over_cap, "the format's limit is 100,000,000"),
    (_header_not_json, "the header is not valid JSON"),
    (_header_not_object, "the header is not a JSON object"),
    (_zero_length_header, "the header is not valid JSON"),
    (_offsets_beyond, "ends at byte"),
    (_shape_lies, "but its data_offsets span"),
    (_unknown_dtype, "unknown dtype 'F33'"),
    (_negative_shape, "invalid shape"),
    (_overlapping, "overlap or leave a gap"),
    (_trailing_garbage, "but the data region holds"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_corrupt_safetensors_is_refused_before_loading(model_copy, corrupt, reason):
    weights = model_copy / "model.safetensors"
    corrupt(weights)
    with pytest.raises(ExplorerError, match="is truncated or corrupt") as error:
        safe_files.check_safetensors(weights)
    assert reason in str(error.value)
    with pytest.raises(ExplorerError, match="model.safetensors is truncated or corrupt"):
        models.check_folder(model_copy)
    with pytest.raises(ExplorerError, match="model.safetensors is truncated or corrupt"):
        loading.load(str(model_copy))
    assert not loading.is_loaded(models.ModelEntry("model", "local", str(model_copy.resolve()), ""))


def test_safetensors_that_is_not_a_regular_file(model_copy):
    (model_copy / "model.safetensors").unlink()
    (model_copy / "model.safetensors").mkdir()
    with pytest.raises(ExplorerError, match="is not a regular file"):
        models.check_folder(model_copy)


@pytest.mark.parametrize("name", [provision.TINY_NAME, provision.BUNDLED_NAME])
def test_real_safetensors_pass_and_match_the_library(cache, name):
    """No false alarms: the shipped files pass, and our header agrees with the safetensors library."""
    from safetensors import safe_open

    path = cache / name / "model.safetensors"
    header = safe_files.read_header(path)
    with safe_open(str(path), "pt") as handle:
        assert set(handle.keys()) == set(header) - {"__metadata__"}
        first = _first_tensor(header)
        assert list(handle.get_slice(first).get_shape()) == header[first]["shape"]
    models.check_folder(cache / name)


def test_sharded_and_odd_but_valid_files_pass(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 5, dtype=torch.bfloat16), "empty": torch.zeros(0, 4), "flag": torch.ones(7, dtype=torch.bool)},
              str(tmp_path / "x.safetensors"), metadata={"format": "pt"})
    assert set(safe_files.read_header(tmp_path / "x.safetensors")) == {"__metadata__", "a", "empty", "flag"}


# Found while writing these tests: load() used to let these loader errors through as tracebacks.
def test_weights_whose_shapes_disagree_with_the_config(model_copy):
    header, body = _split(model_copy / "model.safetensors")
    header["model.embed_tokens.weight"]["shape"] = [49152 * 2, 16]  # same bytes, other shape
    _write(model_copy / "model.safetensors", header, body)
    models.check_folder(model_copy)  # the file itself is well-formed
    with pytest.raises(ExplorerError, match="Could not load"):
        loading.load(str(model_copy))


def test_config_field_of_the_wrong_type(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["hidden_size"] = "thirty-two"
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExplorerError, match="Could not load"):
        loading.load(str(model_copy))
