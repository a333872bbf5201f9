"""Exact parameter counts: build the architecture on the meta device and apply the method for real.

No weights are allocated (meta tensors carry shapes only), so even a 405B model takes a second or
two. Results are cached per (model, method, options): each combination is built at most once, and so is a
combination PEFT refuses (its message is kept and raised again). ``in_background`` builds a combination on
one background thread, so an API caller gets the formulas at once and the exact count later.

The web server builds in a child process instead (``build_in_child_process``, called by app.py): one process
at the lowest CPU priority, the worker boundary of the Calculator. Why: a build on meta tensors is pure
Python, so on a thread it holds the server's GIL; measured with bench/class_load.py (20 users, 1 in 3
questions new), repeated answers fell from ~50 to 32 per second and their p95 rose past 1 s while new
combinations were being built beside them.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import warnings
from concurrent.futures import Future, ProcessPoolExecutor

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
_child: ProcessPoolExecutor | None = None   # set up by build_in_child_process; started at the first build
_use_child = False
_pending: dict[tuple, Future] = {}          # builds the child is doing or will do, by key


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total), every tensor once (tied weights are one tensor)."""
    unique = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in unique.values())
    trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
    return trainable, total


def build_on_meta(spec: ModelSpec, method_name: str, options, attn_implementation: str = "eager"):
    """The model and the method's modules on the meta device. Why the method too: PEFT creates each adapter
    layer on the CPU, initialises it, then moves it to its base layer's device; LoRA r=4096 on Qwen2.5-0.5B
    spent 23.8 s initialising real matrices for one count (0.9 s on meta), and a class asking new ranks kept
    the server's cores busy doing it (bench/class_load.py)."""
    import torch

    method = get_method(method_name)
    with warnings.catch_warnings(), torch.device("meta"):
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
    if key not in _cache and key not in _refused and _use_child:
        with _waiting_lock:
            future = _submit(key, spec, method_name, options)
        try:
            _store(key, future.result())  # the callback may land after this wakes: store here too
        except ExplorerError:  # the method's own refusal (e.g. no layer of that name), as a build here raises it
            raise
        except Exception as error:  # noqa: BLE001 - the child died or was stopped: build here instead
            warnings.warn(f"exact-count process failed ({type(error).__name__}); building in the server")
    if key not in _cache and key not in _refused:
        with _build_lock:
            if key not in _cache and key not in _refused:
                _build(key, spec, method_name, options)
    if key in _refused:
        raise ExplorerError(_refused[key])
    return _cache[key]


def _count_or_refusal(spec: ModelSpec, method_name: str, options) -> tuple[str, object]:
    """("counts", (trainable, total)) or ("refused", PEFT's message as one line); runs here or in the child."""
    try:
        model = build_on_meta(spec, method_name, options)
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as error:
        # PEFT refuses some combinations the formulas cannot foresee (e.g. LoRA on a Mamba layer)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return "refused", f"PEFT could not build {get_method(method_name).title} on this model: {reason}"
    return "counts", count_parameters(model)


def _store(key: tuple, outcome: tuple[str, object]) -> None:
    if len(_cache) + len(_refused) >= MAX_CACHED:
        _cache.clear()
        _refused.clear()
    kind, value = outcome
    (_cache if kind == "counts" else _refused)[key] = value


def _build(key: tuple, spec: ModelSpec, method_name: str, options) -> None:
    """Build on meta and count (the caller holds _build_lock); a refusal is kept as its message."""
    _store(key, _count_or_refusal(spec, method_name, options))


def build_in_child_process(enabled: bool = True) -> None:
    """Build every combination this process is asked for in one child process (started at the first build)
    at the lowest CPU priority: the web server's request threads never wait for the GIL behind a build, and
    a training worker keeps its core. Off again (and the child stopped, by its pid) with ``enabled=False``."""
    global _use_child, _child
    with _waiting_lock:
        _use_child, child, _child = enabled, _child, None
    if child is not None:
        child.shutdown(wait=True, cancel_futures=True)


def child_pid() -> int | None:
    """The build process's pid while it runs (tests stop and check it by pid)."""
    processes = getattr(_child, "_processes", None) or {}
    return next(iter(processes), None)


def _lowest_priority() -> None:
    try:
        os.nice(19)
    except OSError:  # a system that refuses: the build still runs outside the server's GIL
        pass


def _submit(key: tuple, spec: ModelSpec, method_name: str, options) -> Future:
    """The child's build of this key, submitted once (the caller holds _waiting_lock)."""
    global _child
    future = _pending.get(key)
    if future is None:
        if _child is None:
            import multiprocessing

            _child = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_lowest_priority)
        future = _pending[key] = _child.submit(_count_or_refusal, spec, method_name, options)
        future.add_done_callback(lambda done, key=key: _landed(key, done))
    return future


def _landed(key: tuple, future: Future) -> None:
    """Keep the child's answer before the key leaves the waiting set (known first, as in_background asks)."""
    try:
        outcome = None if future.cancelled() else future.result()
    except Exception:  # noqa: BLE001 - a child that died: nothing kept, the question is built when asked again
        outcome = None
    with _waiting_lock:
        if outcome is not None:
            _store(key, outcome)
        _pending.pop(key, None)
        _waiting.discard(key)


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
        if _use_child:
            _submit(key, spec, method_name, options)
            return True
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
