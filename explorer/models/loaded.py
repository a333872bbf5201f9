"""Loaded models stay in memory, least recently used first out, within a memory budget.

The Models tab's base models and the Compare tab's adapted and merged copies share one budget
(settings.model_memory_budget_bytes), so switching prompts or runs does not reload, and a long
session does not grow without bound.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from typing import Callable

from .. import settings


def tensor_bytes(*modules) -> int:
    """Bytes held by the parameters and buffers of these modules, shared tensors counted once."""
    seen, total = set(), 0
    for module in modules:
        if module is None:
            continue
        for tensor in list(module.parameters()) + list(module.buffers()):
            key = (tensor.device.type, tensor.data_ptr())
            if key not in seen:
                seen.add(key)
                total += tensor.numel() * tensor.element_size()
    return total


class LoadedModels:
    """key -> loaded object; ``get`` loads at most once per key and evicts the least recently used."""

    def __init__(self, budget: Callable[[], int] = settings.model_memory_budget_bytes):
        self._budget = budget
        self._items: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: str, load: Callable[[], object], size: Callable[[object], int]) -> object:
        with self._lock:  # loads are serialised: two users asking for one model load it once
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
            value = load()
            self._items[key] = (value, size(value))
            self._evict()
            return value

    def peek(self, key: str) -> bool:
        return key in self._items

    def drop(self, key: str) -> None:
        with self._lock:
            if self._items.pop(key, None) is not None:
                _release()

    def used_bytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def keys(self) -> list[str]:
        return list(self._items)

    def _evict(self) -> None:
        dropped = False
        while len(self._items) > 1 and self.used_bytes() > self._budget():
            self._items.popitem(last=False)
            dropped = True
        if dropped:
            _release()


def _release() -> None:
    """Give dropped models' memory back (CPU allocators keep freed pages otherwise)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


LOADED = LoadedModels()
