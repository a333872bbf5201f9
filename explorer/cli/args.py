"""Arguments every command shares: ``--set KEY=VALUE`` options and settings."""

from __future__ import annotations

from ..errors import ExplorerError


def parse_sets(items) -> dict:
    values = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ExplorerError(f"--set takes KEY=VALUE, got {item!r}.")
        values[key.strip()] = value
    return values
