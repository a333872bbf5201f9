"""Model pickers that follow the registry.

A model exported from Compare, or a folder copied into models_cache, must appear in every tab's
picker without restarting the server: the lists are rebuilt when the page loads and when a tab opens.
"""

from __future__ import annotations

import gradio as gr

from ..costs import specs
from ..models import registry
from .common import log

PASTE = "__pasted__"


def model_choices(catalog: bool = False, paste: bool = False, runnable: list[str] | None = None) -> list:
    """Runnable model names; with catalog, (label, name) pairs of the catalog configs first; with paste,
    the pasted-config.json entry last. `runnable` saves re-reading the registry."""
    names = list(registry.registry()) if runnable is None else runnable
    if not catalog:
        return names
    choices = [(f"{specs.catalog_title(n)}  ·  catalog", n) for n in specs.catalog_names()]
    choices += [(f"{n}  ·  runnable", n) for n in names]
    return choices + ([("Pasted or uploaded config.json", PASTE)] if paste else [])


class ModelPickers:
    """The model dropdowns of all tabs, each with the kind of list it shows."""

    def __init__(self) -> None:
        self.dropdowns: list[gr.Dropdown] = []
        self.kinds: list[dict] = []

    def add(self, dropdown: gr.Dropdown, catalog: bool = False, paste: bool = False) -> None:
        self.dropdowns.append(dropdown)
        self.kinds.append({"catalog": catalog, "paste": paste})

    def refresh(self):
        """New choices for every picker (the registry read once); the selected values stay as they are.
        If the registry cannot be read (models_cache unreadable), the lists stay as they were rather
        than every tab switch failing."""
        try:
            runnable = list(registry.registry())
            return [gr.Dropdown(choices=model_choices(runnable=runnable, **kind)) for kind in self.kinds]
        except Exception:  # noqa: BLE001 - a stale list beats an error toast on every tab switch
            log.exception("could not refresh the model lists")
            return [gr.skip() for _ in self.kinds]

    def refresh_on(self, event_listener) -> None:
        event_listener(self.refresh, None, self.dropdowns, api_visibility="private", queue=False,
                       show_progress="hidden")
