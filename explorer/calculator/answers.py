"""The Calculator's shared answers: one computed result per distinct question, for every user of the server.

The Calculator is deterministic: the same model config, method, options and settings always give the same
numbers. A class moving the same sliders asks the same few questions many times, so each distinct question is
computed once and its result shared (a bounded, least recently used first out, thread-safe cache).

The key holds everything that changes the answer, after coercion: the model's name, source and whole
config.json, the method, and every option and setting field with its type (``r=8`` and ``r=16`` never meet;
``0`` and ``0.0`` are kept apart even where they would agree). Results are shared, so callers treat them
as read-only.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Callable, Hashable

MAX_ANSWERS = 4096  # a result is a few kB: the catalog's models × methods × a class's settings fit


def frozen(value) -> Hashable:
    """A hashable, type-tagged form of an option's value (lists, tuples, dicts and sets included)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), frozen(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(frozen(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(frozen(v)) for v in value)))
    return (type(value).__name__, value)


def fields_key(instance) -> Hashable:
    """Every field of an options or settings dataclass, by name, with its type: the instance's identity."""
    return (type(instance).__qualname__,
            tuple((f.name, frozen(getattr(instance, f.name))) for f in dataclasses.fields(instance)))


def question_key(spec, method_name: str, options, settings) -> tuple:
    """What makes one Calculator answer differ from another."""
    return (spec.name, spec.source, spec.key, method_name, fields_key(options), fields_key(settings))


class Answers:
    """A bounded map from a question's key to its computed result; the least recently used go first."""

    def __init__(self, limit: int = MAX_ANSWERS):
        if limit < 1:
            raise ValueError("an answers cache holds at least one answer")
        self.limit = limit
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key):
        with self._lock:
            if key not in self._items:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value):
        """Keep ``value`` unless another thread stored one first; returns the value kept (so two users who
        asked at the same moment still get the identical result)."""
        with self._lock:
            kept = self._items.setdefault(key, value)
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
            return kept

    def get_or_compute(self, key, compute: Callable[[], object]):
        """The stored answer, or ``compute()`` stored and returned. Computing happens outside the lock (a
        slow question never blocks the others); an exception is raised to the caller and nothing is stored."""
        found = self.get(key)
        return found if found is not None else self.put(key, compute())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0


shared = Answers()  # the server's: every browser session, API caller and CLI call of this process
