"""Exact parameter counts: build the architecture on the meta device and apply the method for real.

No weights are allocated (meta tensors carry shapes only), so even a 405B model takes a second or
two. Results are cached per (model, method, options): each combination is built at most once, and so is a
combination PEFT refuses (its message is kept and raised again). ``in_background`` builds a combination on
the server's one background thread, so an API caller gets the formulas at once and the exact count later.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import warnings

from ..costs.specs import ModelSpec, meta_model
from ..errors import ExplorerError
from ..methods import get as get_method

_build_lock = threading.Lock()  # PEFT and transformers are not built for concurrent model surgery
_cache: dict[tuple, tuple[int, int]] = {}
_refused: dict[tuple, str] = {}   # combinations PEFT could not build: the message, kept as the counts are
MAX_CACHED = 2048
MAX_WAITING = 256                 # background builds waiting; past it a request is not queued (asked again later)
_waiting: set[tuple] = set()
_jobs: queue.Queue = queue.Queue()
_builder: threading.Thread | None = None
_waiting_lock = threading.Lock()


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


def refused(spec: ModelSpec, method_name: str, options) -> str | None:
    """PEFT's message if this combination was built before and refused, without building it."""
    return _refused.get(cache_key(spec, method_name, options))


def exact_counts(spec: ModelSpec, method_name: str, options) -> tuple[int, int]:
    key = cache_key(spec, method_name, options)
    if key not in _cache and key not in _refused:
        with _build_lock:
            if key not in _cache and key not in _refused:
                _build(key, spec, method_name, options)
    if key in _refused:
        raise ExplorerError(_refused[key])
    return _cache[key]


def _build(key: tuple, spec: ModelSpec, method_name: str, options) -> None:
    """Build on meta and count (the caller holds _build_lock); a refusal is kept as its message."""
    if len(_cache) + len(_refused) >= MAX_CACHED:
        _cache.clear()
        _refused.clear()
    try:
        model = build_on_meta(spec, method_name, options)
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as error:
        # PEFT refuses some combinations the formulas cannot foresee (e.g. LoRA on a Mamba layer)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        _refused[key] = f"PEFT could not build {get_method(method_name).title} on this model: {reason}"
        return
    _cache[key] = count_parameters(model)


def in_background(spec: ModelSpec, method_name: str, options) -> bool:
    """Have the exact counts built on the background thread (once per combination, however many ask).
    True while they wait or build; False when they are known already or too many builds wait (ask again)."""
    global _builder
    key = cache_key(spec, method_name, options)
    with _waiting_lock:
        if key in _cache or key in _refused:  # known first: the builder fills the cache before it leaves _waiting
            return False
        if key in _waiting:
            return True
        if len(_waiting) >= MAX_WAITING:
            return False
        _waiting.add(key)
        _jobs.put((key, spec, method_name, options))
        if _builder is None or not _builder.is_alive():
            _builder = threading.Thread(target=_build_waiting, name="explorer-exact-counts", daemon=True)
            _builder.start()
    return True


def _build_waiting() -> None:
    while True:
        key, spec, method_name, options = _jobs.get()
        try:
            exact_counts(spec, method_name, options)
        except Exception:  # noqa: BLE001 - a refusal is kept by exact_counts; anything else is asked again
            pass
        finally:
            with _waiting_lock:
                _waiting.discard(key)
