"""Every model load of the app: one device rule, one dtype rule, safetensors only, never remote code.

Two kinds of copies:
  - ``load(name)``: the shared inference copy of a base model (Models tab, Compare's base column), kept in
    the least-recently-used memory budget of explorer.models.loaded;
  - ``load_fresh(name, method, options, precision)``: a private copy to train or to adapt (training and
    Compare's adapted and merged models must never touch the shared one). A method that stores its base
    differently (QLoRA's 4-bit weights) says how through its ``load_kwargs`` and ``after_load`` hooks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..costs import specs
from ..errors import ExplorerError
from .loaded import LOADED, tensor_bytes
from .registry import ModelEntry, ensure_files, loaded_key, resolve


@dataclass
class LoadedModel:
    entry: ModelEntry
    model: object
    tokenizer: object
    device: str
    dtype: object
    spec: specs.ModelSpec


def device() -> str:
    """CUDA when present, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_for(precision: str | None, where: str):
    """The torch dtype of a load: "fp32" or "bf16" as asked (bf16 refused on a GPU without it); None, the
    inference default: bf16 on a GPU that supports it, float32 otherwise (CPUs run bf16 matmuls slowly)."""
    import torch

    if precision is None:
        return torch.bfloat16 if where == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if precision == "bf16":
        if where == "cuda" and not torch.cuda.is_bf16_supported():
            raise ExplorerError("This GPU does not support bf16; choose fp32.")
        return torch.bfloat16
    return torch.float32


def _from_pretrained(entry: ModelEntry, dtype, extra: dict, auto_class=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(entry.location, trust_remote_code=False)
        model = (auto_class or AutoModelForCausalLM).from_pretrained(
            entry.location, dtype=dtype, use_safetensors=True, trust_remote_code=False, **extra)
    except ExplorerError:
        raise
    except Exception as error:  # any loader error (shapes, config types) means the folder is not loadable
        raise ExplorerError(f"Could not load '{entry.name}': {type(error).__name__}: {str(error)[:400]}") from None
    return model, tokenizer


def load_fresh(name: str, method=None, options=None, precision: str | None = "fp32",
               cache: Path | None = None) -> LoadedModel:
    """A private copy of a base model, loaded as ``method`` needs its base (a registry Method, or None)."""
    entry = resolve(name, cache)
    ensure_files(entry, cache)
    where = device()
    dtype = dtype_for(precision, where)
    extra = method.load_kwargs(options, where) if method is not None else {}
    model, tokenizer = _from_pretrained(entry, dtype, extra)
    if method is not None:
        method.after_load(model)
    if "device_map" not in extra:  # a device map has placed the weights already
        model.to(where)
    return LoadedModel(entry, model, tokenizer, where, dtype, spec_of(entry, model))


def load_sequence_classifier(name: str, num_labels: int, precision: str | None = "fp32",
                             cache: Path | None = None) -> LoadedModel:
    """A private copy of a base model as transformers' sequence classifier: the same backbone, a new ``score``
    layer of ``num_labels`` outputs read at the last non-padding token (the LoRA baseline of a classifier head)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    entry = resolve(name, cache)
    ensure_files(entry, cache)
    where = device()
    dtype = dtype_for(precision, where)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the new score layer as missing: expected, not news
    try:
        model, tokenizer = _from_pretrained(entry, dtype, {"num_labels": num_labels},
                                            AutoModelForSequenceClassification)
    finally:
        hf_logging.set_verbosity(verbosity)
    from ..data.chat import pad_id

    model.config.pad_token_id = pad_id(tokenizer)  # it finds each sequence's last token by the padding id
    model.to(where)
    return LoadedModel(entry, model, tokenizer, where, dtype, spec_of(entry, model))


def spec_of(entry: ModelEntry, model) -> specs.ModelSpec:
    """The Calculator's spec of a loaded model: from its config.json, or the loaded config (a hub id)."""
    path = Path(entry.location) / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else model.config.to_dict()
    return specs.spec_from_dict(config, entry.name, "runnable")


def load(name: str, cache: Path | None = None) -> LoadedModel:
    """The shared inference copy of a base model (in eval mode); it stays loaded while the memory budget
    allows (explorer.models.loaded), so later calls return the same objects."""
    entry = resolve(name, cache)

    def build() -> LoadedModel:
        loaded = load_fresh(name, precision=None, cache=cache)
        loaded.model.eval()
        return loaded

    return LOADED.get(loaded_key(entry), build, lambda loaded: tensor_bytes(loaded.model))


def is_loaded(entry: ModelEntry) -> bool:
    return LOADED.peek(loaded_key(entry))


def load_with_adapter(name: str, method, options, precision: str, adapter_dir: Path, label: str,
                      dequantize: bool = False) -> LoadedModel:
    """A fresh base with a saved adapter loaded onto it (PEFT's files, or our own safetensors), frozen and in
    eval mode. ``dequantize``: a 4-bit base turned into float weights first (what a merge folds into).
    Any loader error is one clear message naming ``label`` (e.g. "run 2026…"): corrupt or foreign files."""
    loaded = load_fresh(name, method, options, precision)
    model = loaded.model.dequantize() if dequantize else loaded.model
    try:
        if method.uses_peft:
            from peft import PeftModel

            if not (adapter_dir / "adapter_model.safetensors").is_file():
                raise ValueError("adapter_model.safetensors is missing (only safetensors adapters are loaded)")
            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
        else:
            from ..methods.own_modules import load_trainable

            model = method.apply(model, loaded.spec, options)
            load_trainable(model, str(adapter_dir))
    except Exception as error:  # corrupt or foreign files: any loader error means "cannot load"
        raise ExplorerError(f"The adapter of {label} cannot be loaded (missing, incomplete or corrupt "
                            f"files): {str(error)[:300]}") from None
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    loaded.model = model.eval()
    return loaded
