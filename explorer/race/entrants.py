"""A race's entrants: which methods, with which options, written the way the CLI and the page take them.

A spec is a method name with optional options after colons, with PEFT's option names:
``lora``, ``lora:r=1``, ``lora:r=64:lora_alpha=128``, ``ia3``, ``prompt:num_virtual_tokens=10``.
Every spec is checked against the method's options (names, types, bounds) before anything trains.

The default field: every method of the registry at its defaults (those marked ``in_default_race``: the LoRA
variants PiSSA, OLoRA, LoRA+, VeRA and LN tuning are raced by naming them, which keeps the default race within
its time), plus a LoRA rank sweep (r = 1, 2, 4, 8, 16, 64: Hu et al. 2021, §7.2, report that very low ranks
already suffice), with duplicates merged (the sweep's r=8 is LoRA's default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ExplorerError
from ..methods import DEFAULT_METHOD, METHODS, NOT_OFFERED

RANK_SWEEP = (1, 2, 4, 8, 16, 64)
MAX_ENTRANTS = len(METHODS) + 10  # every method at once (--entrants all) and a few variants beside them


@dataclass(frozen=True)
class Entrant:
    """One method with its options, as it runs in a race."""

    method: str
    options: tuple = ()                     # (name, value) pairs as given, sorted: hashable and comparable
    learning_rate: float = 0.0              # 0 = the method's default

    @property
    def name(self) -> str:
        parts = [self.method] + [f"{k}={v}" for k, v in self.options]
        if self.learning_rate:
            parts.append(f"lr={self.learning_rate:g}")
        return ":".join(parts)

    @property
    def options_dict(self) -> dict:
        return dict(self.options)

    @property
    def title(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.options)
        return METHODS[self.method].title + (f" ({extra})" if extra else "")


def parse_spec(spec: str) -> Entrant:
    """``method[:key=value]...`` checked against the method's options: one clear line for any mistake."""
    text = (spec or "").strip()
    if not text:
        raise ExplorerError("An entrant spec is empty: write a method name, e.g. lora or lora:r=4.")
    method, *pairs = [part.strip() for part in text.split(":")]
    if method in NOT_OFFERED:
        title, why = NOT_OFFERED[method]
        raise ExplorerError(f"Entrant '{text}': {title} is not offered here: {why}")
    if method not in METHODS:
        raise ExplorerError(f"Entrant '{text}': unknown method '{method}'. Methods: {', '.join(METHODS)}.")
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ExplorerError(f"Entrant '{text}': '{pair}' is not key=value (e.g. lora:r=4).")
        options[key.strip()] = value.strip()
    try:
        METHODS[method].parse_options(options)  # names, types and bounds, with the method's own message
    except ExplorerError as error:
        raise ExplorerError(f"Entrant '{text}': {error}") from None
    return Entrant(method, tuple(sorted(options.items())))


def parse_specs(specs: str | list[str]) -> list[Entrant]:
    """A comma-separated list (or a list) of specs, each checked, duplicates dropped (first kept); "default" and
    "all" name whole fields (``expand``)."""
    specs = expand(specs)
    items = specs.split(",") if isinstance(specs, str) else list(specs)
    entrants = list(dict.fromkeys(parse_spec(item) for item in items if str(item).strip()))
    if not entrants:
        raise ExplorerError("A race needs at least one entrant, e.g. --entrants lora,ia3,prompt.")
    if len(entrants) > MAX_ENTRANTS:
        raise ExplorerError(f"{len(entrants)} entrants; a race takes at most {MAX_ENTRANTS}.")
    return entrants


def same_as_default(entrant: Entrant) -> Entrant:
    """The entrant with options equal to the method's defaults dropped, so 'lora:r=8' and 'lora' are one."""
    method = METHODS[entrant.method]
    defaults = dataclasses.asdict(method.parse_options({}))
    parsed = dataclasses.asdict(method.parse_options(entrant.options_dict))
    kept = tuple((k, v) for k, v in entrant.options if parsed[k] != defaults[k])
    return dataclasses.replace(entrant, options=kept)


def default_entrants() -> list[Entrant]:
    """Every method of the default field at its defaults, then the LoRA rank sweep; an entrant equal to another
    appears once."""
    field_ = [Entrant(name) for name, method in METHODS.items() if method.in_default_race]
    field_ += [Entrant(DEFAULT_METHOD, (("r", str(r)),)) for r in RANK_SWEEP]
    return list(dict.fromkeys(same_as_default(e) for e in field_))


def default_specs() -> str:
    return ",".join(e.name for e in default_entrants())


def all_entrants() -> list[Entrant]:
    """Every method of the registry at its defaults (``--entrants all``): the LoRA variants too, no rank sweep."""
    return [Entrant(name) for name in METHODS]


def expand(specs: str | list[str]) -> str | list[str]:
    """The named fields: "default" (every method of the default field plus the rank sweep) and "all" (every
    method of the registry at its defaults); anything else is a list of specs, returned as given."""
    named = {"default": default_specs, "all": lambda: ",".join(e.name for e in all_entrants())}
    if isinstance(specs, str) and specs.strip().lower() in named:
        return named[specs.strip().lower()]()
    return specs


def other_methods() -> list[str]:
    """Methods of the registry left out of the default field (add them by name)."""
    return [name for name, method in METHODS.items() if not method.in_default_race]


def with_rates(entrants: list[Entrant], factors: tuple[float, ...]) -> list[list[Entrant]]:
    """Each entrant at its default learning rate times each factor (a small per-entrant learning-rate sweep:
    a race at one shared rate measures the rate, not the method)."""
    groups = []
    for entrant in entrants:
        base = entrant.learning_rate or METHODS[entrant.method].default_lr
        groups.append([dataclasses.replace(entrant, learning_rate=round(base * f, 12)) for f in factors])
    return groups
