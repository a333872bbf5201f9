"""Option fields and the checked coercion of loose values (UI widgets, CLI strings, saved JSON) into them.

Every option dataclass of the project (methods' options, training and Calculator settings, the decision
helper's job) declares its fields with ``option``: help text for tooltips and bounds for checks live in
the field's metadata, as PEFT's config dataclasses keep theirs. ``coerce`` turns a user's value into the
field's type and refuses what is out of bounds, naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field

from .errors import ExplorerError


def option(default, help: str, **bounds):
    """A dataclass field whose metadata holds help text and UI bounds (min, max, step, choices)."""
    return field(default=default, metadata={"help": help, **bounds})


def coerce(f: dataclasses.Field, value):
    """Turn a widget or CLI value into the field's type, enforcing its bounds."""
    meta, default = f.metadata, f.default
    label = f.name
    if isinstance(default, bool):
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ExplorerError(f"{label} must be true or false, got {shown(value)}.")
            return lowered in ("true", "1", "yes", "on")
        return bool(value)
    if isinstance(default, int):
        return whole(label, value, meta.get("min"), meta.get("max"))
    if isinstance(default, float):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ExplorerError(f"{label} must be a number, got {shown(value)}.") from None
        lo, hi = meta.get("min"), meta.get("max")
        if not math.isfinite(number) or (lo is not None and number < lo) or (hi is not None and number > hi):
            raise ExplorerError(f"{label} must be a finite number between {lo} and {hi}, got {shown(value)}.")
        return number
    try:
        text = "" if value is None else str(value).strip()
    except ValueError:  # e.g. an int too long for str() (Python's 4300-digit limit)
        raise ExplorerError(f"{label} must be text, got {shown(value)}.") from None
    choices = meta.get("choices")
    if choices and text not in choices:
        raise ExplorerError(f"{label} must be one of {', '.join(choices)}, got {shown(value)}.")
    return text


def whole(label: str, value, low: int | None = None, high: int | None = None) -> int:
    """A whole number from a widget, a CLI string or a JSON value, within [low, high] where given: the one check
    of whole numbers (option fields, command-line flags, the Learn experiments' counts). A bool is not a count."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
        raise ExplorerError(f"{label} must be a whole number, got {shown(value)}.") from None
    if not math.isfinite(number) or number != int(number):
        raise ExplorerError(f"{label} must be a whole number, got {shown(value)}.")
    number = int(number)
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = (f"between {low} and {high}" if low is not None and high is not None
                  else f"at least {low}" if low is not None else f"at most {high}")
        raise ExplorerError(f"{label} must be {bounds}, got {number}.")
    return number


def shown(value, limit: int = 60) -> str:
    """A short repr of a user's value for a message: never huge, never raising (ints over 4300 digits do)."""
    try:
        text = repr(value)
    except ValueError:
        return "a number too large to show"
    return text if len(text) <= limit else text[:limit] + "…"
