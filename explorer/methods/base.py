"""What every method provides: options, a formula with its breakdown, and a real build.

A method module defines an ``Options`` dataclass (fields carry help text and bounds in their
metadata; the UI shows the help as tooltips) and a ``Method`` instance. Formulas answer from the
model's ``Arch`` instantly; ``apply`` builds the method for real (PEFT, or the project's own
modules) on a model, which may live on the meta device.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ExplorerError
from ..costs.flops import Adaptation
from ..costs.specs import Arch, ModelSpec


def option(default, help: str, **bounds):
    """A dataclass field whose metadata holds help text and UI bounds (min, max, step, choices)."""
    return field(default=default, metadata={"help": help, **bounds})


@dataclass(frozen=True)
class Term:
    """One line of a parameter formula: e.g. q_proj: 8·(576+576) × 30 layers."""

    module: str
    count: int
    expression: str


def per_layer_term(module: str, per_layer: int, layers: int, expression: str) -> Term:
    return Term(module, per_layer * layers, f"{expression} × {layers} layers = {per_layer * layers:,}")


@dataclass
class Method:
    name: str
    title: str
    where: str                     # where it adapts, in a few words
    explanation: str
    when_to_use: str
    default_lr: float
    options_type: type
    mergeable: bool
    merge_reason: str              # why it merges, or why it cannot
    uses_peft: bool
    terms: Callable                # (spec, options) -> list[Term]
    adaptation: Callable           # (spec, options) -> Adaptation
    apply: Callable                # (model, spec, options) -> model with the method applied
    validate: Callable = lambda spec, options: None
    textbook: str = ""             # key into explorer.textbook claims, if the chapter gives a figure
    new_model: bool = False        # trains plain weights of its own (full, head): nothing to merge

    def parse_options(self, values: dict | None = None):
        """Options from loose values (UI widgets, CLI strings), checked; clear message on bad input."""
        values = dict(values or {})
        known = {f.name: f for f in dataclasses.fields(self.options_type)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ExplorerError(f"{self.title} has no option {', '.join(unknown)}; "
                                f"its options are: {', '.join(known) or 'none'}.")
        parsed = {name: coerce(known[name], value) for name, value in values.items()}
        return self.options_type(**parsed)

    def trainable_formula(self, spec: ModelSpec, options) -> int:
        return sum(term.count for term in self.terms(spec, options))


def coerce(f: dataclasses.Field, value):
    """Turn a widget or CLI value into the field's type, enforcing its bounds."""
    meta, default = f.metadata, f.default
    label = f.name
    if isinstance(default, bool):
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ExplorerError(f"{label} must be true or false, got {_shown(value)}.")
            return lowered in ("true", "1", "yes", "on")
        return bool(value)
    if isinstance(default, int):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
            raise ExplorerError(f"{label} must be a whole number, got {_shown(value)}.") from None
        if not math.isfinite(number) or number != int(number):
            raise ExplorerError(f"{label} must be a whole number, got {_shown(value)}.")
        number = int(number)
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise ExplorerError(f"{label} must be between {lo} and {hi}, got {number}.")
        return number
    if isinstance(default, float):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ExplorerError(f"{label} must be a number, got {_shown(value)}.") from None
        lo, hi = meta.get("min"), meta.get("max")
        if not math.isfinite(number) or (lo is not None and number < lo) or (hi is not None and number > hi):
            raise ExplorerError(f"{label} must be a finite number between {lo} and {hi}, got {_shown(value)}.")
        return number
    try:
        text = "" if value is None else str(value).strip()
    except ValueError:  # e.g. an int too long for str() (Python's 4300-digit limit)
        raise ExplorerError(f"{label} must be text, got {_shown(value)}.") from None
    choices = meta.get("choices")
    if choices and text not in choices:
        raise ExplorerError(f"{label} must be one of {', '.join(choices)}, got {_shown(value)}.")
    return text


def _shown(value, limit: int = 60) -> str:
    """A short repr of a user's value for a message: never huge, never raising (ints over 4300 digits do)."""
    try:
        text = repr(value)
    except ValueError:
        return "a number too large to show"
    return text if len(text) <= limit else text[:limit] + "…"


def option_help(options_type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(options_type)}


def freeze(model) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def block_linear_names(arch: Arch) -> list[str]:
    return [lin.name for lin in arch.linears]


def empty_adaptation(spec, options) -> Adaptation:
    return Adaptation()
