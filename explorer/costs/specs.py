"""Model specs: a transformers config and the per-block table a calculator needs, for any decoder model.

A ``ModelSpec`` holds a transformers config and its ``Arch`` (explorer.costs.arch): every module with its
PEFT name, the products each block runs and what feeds them, derived from the model transformers builds
on the meta device (explorer.costs.derive), once per config. The analytical formulas of
``explorer.methods`` and ``explorer.costs`` work from the Arch alone, so they answer instantly even for a
405B model; ``meta_model`` builds the real architecture for exact counts and FLOP checks.

Any model type transformers can build as a causal LM from a config.json works; refused are only configs
transformers itself rejects (with its reason) and configs that ask for remote code (``auto_map``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import ExplorerError
from .arch import Arch, Linear  # noqa: F401  (re-exported: the formulas import them from here)

CATALOG_DIR = Path(__file__).parent / "catalog"
MAX_PARAMS = 5e12  # anything larger is a typo, not a model
MAX_LAYERS = 1024
_derived: dict[str, Arch] = {}
_derive_lock = threading.Lock()


@dataclass
class ModelSpec:
    name: str
    source: str                     # "catalog" | "runnable" | "upload"
    config: object                  # transformers PretrainedConfig
    notes: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """The config's identity: two specs with the same config.json share one derived Arch."""
        if "_key" not in self.__dict__:
            self._key = json.dumps(self.raw, sort_keys=True, default=str)
        return self._key

    @property
    def arch(self) -> Arch:
        if "_arch" not in self.__dict__:
            self._arch = arch_of(self)
        return self._arch


def arch_of(spec: ModelSpec) -> Arch:
    """The spec's Arch, derived from its meta-device model once per config (cached)."""
    key = spec.key
    arch = _derived.get(key)
    if arch is None:
        with _derive_lock:
            arch = _derived.get(key)
            if arch is None:
                from .derive import TraceError, derive

                model_type = spec.raw.get("model_type")
                try:
                    arch = derive(spec.config)
                except TraceError as error:
                    reason = str(error).strip().splitlines()
                    raise ExplorerError(f"transformers builds this '{model_type}' model, but the calculator could not "
                                        f"trace its forward pass on the meta device: {reason[0] if reason else ''}") from None
                except Exception as error:  # transformers raises many kinds for a config it cannot build
                    reason = str(getattr(error, "__cause__", None) or error).strip().splitlines()
                    raise ExplorerError(f"transformers could not build a '{model_type}' model from "
                                        f"this config.json: {reason[0] if reason else type(error).__name__}") from None
                if len(_derived) >= 256:
                    _derived.clear()
                _derived[key] = arch
    return arch


def derived(spec: ModelSpec) -> bool:
    """Whether the spec's Arch is derived already (the next use costs nothing)."""
    return spec.key in _derived


SIZE_FIELDS = [("hidden size", ("hidden_size", "n_embd", "d_model")),
               ("number of layers", ("num_hidden_layers", "n_layer", "num_layers")),
               ("attention heads", ("num_attention_heads", "n_head")),
               ("key/value heads", ("num_key_value_heads",)),
               ("intermediate size", ("intermediate_size", "n_inner")),
               ("vocabulary size", ("vocab_size",)),
               ("experts", ("num_local_experts", "num_experts", "n_routed_experts"))]


def _size(data: dict, keys: tuple) -> object:
    return next((data[k] for k in keys if data.get(k) is not None), None)


def _check_sizes(data: dict) -> None:
    """Refuse sizes no model has before building anything: a negative width, a typo of a thousand layers."""
    for label, keys in SIZE_FIELDS:
        value = _size(data, keys)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ExplorerError(f"config.json: {label} must be a positive whole number, got {value!r}.")
    heads, kv = _size(data, SIZE_FIELDS[2][1]), _size(data, SIZE_FIELDS[3][1])
    if heads and kv and heads % kv:
        raise ExplorerError(f"config.json: {heads} attention heads cannot be shared by {kv} key/value heads.")
    layers = _size(data, SIZE_FIELDS[1][1]) or 1
    if layers > MAX_LAYERS:
        raise ExplorerError(f"config.json has {layers} layers; the calculator stops at {MAX_LAYERS} (is a size mistyped?).")
    h = _size(data, SIZE_FIELDS[0][1]) or 1
    inner = _size(data, SIZE_FIELDS[4][1]) or 4 * h
    experts = _size(data, SIZE_FIELDS[6][1]) or 1
    estimate = layers * (4 * h * h + 3 * h * inner * experts) + 2 * (_size(data, SIZE_FIELDS[5][1]) or 1) * h
    if estimate > MAX_PARAMS:
        raise ExplorerError(f"config.json describes about {estimate:.3g} parameters; "
                            f"the calculator stops at {MAX_PARAMS:.0e} (is a size mistyped?).")


def _check_total(arch: Arch) -> None:
    if arch.total_params() > MAX_PARAMS:
        raise ExplorerError(f"config.json describes {arch.total_params():.3g} parameters; "
                            f"the calculator stops at {MAX_PARAMS:.0e} (is a size mistyped?).")


def spec_from_dict(data: dict, name: str, source: str, notes: str = "") -> ModelSpec:
    """Build a spec from config.json contents, refusing what we cannot or must not handle."""
    if not isinstance(data, dict):
        raise ExplorerError("config.json must hold a JSON object.")
    data = {k: v for k, v in data.items() if k != "_catalog"}
    if "auto_map" in data:
        raise ExplorerError("This config.json asks for remote code (auto_map); PEFT Explorer never runs it.")
    model_type = data.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ExplorerError("config.json has no \"model_type\" field, so the architecture is unknown.")
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ExplorerError(f"transformers does not know the model type '{model_type}'.")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ExplorerError(f"transformers has no causal language model for the model type '{model_type}' "
                            "(the calculator covers decoder-only models that generate text).")
    data.pop("torch_dtype", None)  # deprecated key; we choose precision ourselves
    data.pop("dtype", None)
    _check_sizes(data)
    try:
        config = AutoConfig.for_model(model_type, **data)
    except Exception as error:  # transformers and huggingface_hub raise many kinds for a bad config
        reason = getattr(error, "__cause__", None) or error
        raise ExplorerError(f"config.json could not be read as a '{model_type}' config: {reason}") from None
    spec = ModelSpec(name, source, config, notes, raw={"model_type": model_type, **data})
    if source != "catalog":  # a config from a user: derive now, so a bad one is refused with transformers' reason
        _check_total(spec.arch)
    return spec


def catalog_names() -> list[str]:
    return sorted(path.stem for path in CATALOG_DIR.glob("*.json"))


@lru_cache(maxsize=None)
def catalog_spec(name: str) -> ModelSpec:
    data = json.loads((CATALOG_DIR / f"{name}.json").read_text())
    return spec_from_dict(data, name, "catalog", data.get("_catalog", {}).get("notes", ""))


def catalog() -> dict[str, ModelSpec]:
    """The catalog of real configs (explorer/costs/catalog/*.json), by file name (Archs derived on first use)."""
    return {name: catalog_spec(name) for name in catalog_names()}


def catalog_entry(name: str) -> dict:
    """A catalog file's "_catalog" notes: name, source, family, notes, published parameter count."""
    return json.loads((CATALOG_DIR / f"{name}.json").read_text()).get("_catalog", {})


def catalog_title(name: str) -> str:
    data = json.loads((CATALOG_DIR / f"{name}.json").read_text())
    return data.get("_catalog", {}).get("name", name)


def parse_config_text(text: str, name: str = "uploaded config") -> ModelSpec:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError) as error:
        raise ExplorerError(f"The pasted config.json is not valid JSON: {error}") from None
    return spec_from_dict(data, name, "upload")


def catalog_or_config(name: str) -> ModelSpec | None:
    """A catalog name, or the path of a config.json (or its folder); None for anything else. A runnable
    model's name (a converted or downloaded model) is resolved one layer up, where the model registry lives:
    explorer.models.specs.resolve."""
    name = (name or "").strip()
    if name in catalog_names():
        return catalog_spec(name)
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            return parse_config_text(path.read_text(encoding="utf-8"), path.parent.name)
        except UnicodeDecodeError:
            raise ExplorerError(f"{path} is not UTF-8 text.") from None
    return None


def meta_model(spec: ModelSpec, attn_implementation: str = "eager"):
    """The real architecture on the meta device: every module and shape, no memory. MoE experts run as
    transformers' batched_mm (every token through exactly top-k experts, no data-dependent routing)."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(spec.config)
    config._attn_implementation = attn_implementation
    if hasattr(config, "_experts_implementation"):
        config._experts_implementation = "batched_mm"
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
