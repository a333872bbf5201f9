"""Exact parameter counts: build the architecture on the meta device and apply the method for real.

No weights are allocated (meta tensors carry shapes only), so even a 405B model takes a second or
two. Results are cached per (model, method, options): each combination is built at most once.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings

from ..costs.specs import ModelSpec, meta_model
from ..errors import ExplorerError
from ..methods import get as get_method

_build_lock = threading.Lock()  # PEFT and transformers are not built for concurrent model surgery
_cache: dict[tuple, tuple[int, int]] = {}
MAX_CACHED = 2048


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total), every tensor once (tied weights are one tensor)."""
    unique = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in unique.values())
    trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
    return trainable, total


def build_on_meta(spec: ModelSpec, method_name: str, options, attn_implementation: str = "eager"):
    method = get_method(method_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = meta_model(spec, attn_implementation)
        return method.apply(model, spec, options)


def cache_key(spec: ModelSpec, method_name: str, options) -> tuple:
    return (spec.name, spec.source, repr(sorted(spec.raw.items())), method_name,
            tuple(sorted(dataclasses.asdict(options).items())))


def cached(spec: ModelSpec, method_name: str, options) -> tuple[int, int] | None:
    """The exact counts if they were computed before, without computing them."""
    return _cache.get(cache_key(spec, method_name, options))


def exact_counts(spec: ModelSpec, method_name: str, options) -> tuple[int, int]:
    key = cache_key(spec, method_name, options)
    if key in _cache:
        return _cache[key]
    with _build_lock:
        if key not in _cache:
            if len(_cache) >= MAX_CACHED:
                _cache.clear()
            try:
                model = build_on_meta(spec, method_name, options)
            except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as error:
                # PEFT refuses some combinations the formulas cannot foresee (e.g. LoRA on a Mamba layer)
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise ExplorerError(f"PEFT could not build {get_method(method_name).title} on this model: "
                                    f"{reason}") from None
            _cache[key] = count_parameters(model)
    return _cache[key]
