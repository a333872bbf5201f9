"""Model pickers that follow the registry.

A model exported from Compare, or a folder copied into models_cache, must appear in every tab's
picker without restarting the server: the lists are rebuilt when the page loads and when a tab opens.
"""

from __future__ import annotations

import gradio as gr

from .. import models, specs
from .common import log

PASTE = "__pasted__"


def runnable_names() -> list[str]:
    return list(models.registry())


def catalog_and_runnable(with_paste: bool = False) -> list[tuple[str, str]]:
    choices = [(f"{specs.catalog_title(n)}  ·  catalog", n) for n in specs.catalog_names()]
    choices += [(f"{n}  ·  runnable", n) for n in models.registry()]
    return choices + ([("Pasted or uploaded config.json", PASTE)] if with_paste else [])


class ModelPickers:
    """The model dropdowns of all tabs, each with the function that lists its choices."""

    def __init__(self) -> None:
        self.dropdowns: list[gr.Dropdown] = []
        self.listers: list = []

    def add(self, dropdown: gr.Dropdown, lister) -> None:
        self.dropdowns.append(dropdown)
        self.listers.append(lister)

    def refresh(self):
        """New choices for every picker; the selected values stay as they are. If the registry cannot be
        read (models_cache unreadable), the lists stay as they were rather than every tab switch failing."""
        try:
            return [gr.Dropdown(choices=lister()) for lister in self.listers]
        except Exception:  # noqa: BLE001 - a stale list beats an error toast on every tab switch
            log.exception("could not refresh the model lists")
            return [gr.skip() for _ in self.listers]

    def refresh_on(self, event_listener) -> None:
        event_listener(self.refresh, None, self.dropdowns, api_visibility="private", queue=False,
                       show_progress="hidden")
