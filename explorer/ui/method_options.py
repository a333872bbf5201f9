"""The selected method's option widgets, in a few shared places instead of one hidden set per method.

With 50 methods, a hidden set of widgets per method in both the Calculator and Fine-tune tabs made 1404
components and a 3.2 MB page config, and each page load cost chromium about 2.5 s per tab on the CI machine
(measured with a headless chromium: 7.5 s → 2.4 s for a load with the sets trimmed). Here:

- every method's option values live in one state, ``values`` ({"lora.r": 8, ...}): a value typed for one
  method is kept while another is picked, and handlers read the options from it;
- sliders get one widget per distinct slider (field name and help text: 35, not 348 widgets), each in a group
  that is shown or hidden. A slider's props are never updated: gradio rebuilds a component from its
  constructor on a prop update, which would drop ``widgets.named_slider``'s message;
- the other options go to slots, enough of each kind (number, dropdown, checkbox, text) for the method
  with most of that kind; picking a method relabels its slots and hides the rest.

Every listener is static. (``gr.render`` would build only the selected method's widgets, but its listeners
are replaced at each render, and an event from a replaced one fails with a KeyError that stalls the page:
seen in the browser tests.)
"""

from __future__ import annotations

import dataclasses

import gradio as gr

from ..methods import DEFAULT_METHOD, METHODS
from .widgets import KINDS, kind_of, option_key, widget_for


def option_defaults() -> dict:
    """Every method's options at their defaults, by name ("lora.r"): the value a tab's option state starts at."""
    return {option_key(name, f.name): f.default for name, m in METHODS.items() for f in dataclasses.fields(m.options_type)}


def placements(method: str, sliders: bool) -> list[tuple[str, object, dataclasses.Field]]:
    """Where each option of a method is shown: ("slider", (field name, help), field), or (kind, slot number,
    field) for the other kinds, slots numbered from 0 in the method's field order."""
    used = dict.fromkeys(KINDS, 0)
    placed = []
    for f in dataclasses.fields(METHODS[method].options_type):
        kind = kind_of(f, sliders)
        if kind == "slider":
            placed.append((kind, (f.name, f.metadata.get("help", "")), f))
        else:
            placed.append((kind, used[kind], f))
            used[kind] += 1
    return placed


class MethodOptions:
    """A tab's option widgets; ``show`` and ``store`` are the listeners' functions (tested without a browser)."""

    def __init__(self, prefix: str, method: gr.Dropdown, sliders: bool = True):
        self.sliders = sliders
        self.plans = plans = {name: placements(name, sliders) for name in METHODS}
        shown = {(kind, where): f for kind, where, f in plans[DEFAULT_METHOD]}
        self.values = gr.State(option_defaults())
        # A handler that sets ``values`` (a recommendation) sets ``requested`` to the method whose values to show,
        # with a new count: the widgets follow through this state's change event, so the handler's own outputs
        # hold no widget (explorer.ui.finetune_tab.recommend_handler).
        self.requested = gr.State(None)
        self.note = gr.Markdown(self.no_options(DEFAULT_METHOD), visible=not plans[DEFAULT_METHOD])
        self.slider_groups, self.slider_widgets, self.slots = {}, {}, {}
        # Rows stay shown when empty: the browser tests saw other widgets' change events fire again after updates,
        # empty ones included (explorer.ui.dataset_picker.dataset_picked), so the listeners update few blocks.
        with gr.Row():  # sizes, rates and choices
            for name, plan in plans.items():
                for kind, where, f in plan:
                    if kind == "slider" and where not in self.slider_widgets:
                        with gr.Group(visible=(kind, where) in shown) as group:
                            self.slider_widgets[where] = widget_for(f, f"{prefix}-{name}-{f.name}", sliders)
                        self.slider_groups[where] = group
            self.add_slots(prefix, ("number", "dropdown"), plans, shown)
        with gr.Row():  # switches in a row of their own: among boxes, gradio shrinks a checkbox to its tick
            self.add_slots(prefix, ("checkbox",), plans, shown)
        with gr.Row():  # layer names, free text
            self.add_slots(prefix, ("textbox",), plans, shown)
        self.outputs = [self.note, *self.slider_groups.values(), *self.slider_widgets.values(), *self.slots.values()]
        self.inputs = [method, self.values, *self.slider_widgets.values(), *self.slots.values()]
        method.change(self.show, [method, self.values], self.outputs, api_visibility="private",
                      show_progress="hidden", queue=False)
        self.requested.change(self.show_requested, [self.requested, self.values], self.outputs,
                              api_visibility="private", show_progress="hidden")
        gr.on([w.change for w in (*self.slider_widgets.values(), *self.slots.values())], self.store, self.inputs,
              self.values, trigger_mode="always_last", show_progress="hidden", api_visibility="private")

    def add_slots(self, prefix: str, kinds: tuple, plans: dict, shown: dict) -> None:
        """As many slots of each kind as the method with most of that kind needs; the selected method's shown."""
        for kind in kinds:
            for slot in range(max(sum(k == kind for k, _, _ in plan) for plan in plans.values())):
                elem_id, f = f"{prefix}-option-{kind}-{slot}", shown.get((kind, slot))
                self.slots[kind, slot] = (widget_for(f, elem_id, self.sliders) if f else
                                          KINDS[kind](visible=False, elem_id=elem_id))

    @staticmethod
    def no_options(method: str) -> str:
        return f"{METHODS[method].title} has no options."

    def show(self, method: str, values: dict) -> list:
        """The widgets for ``method``: its sliders shown, its slots relabelled, each at its value in ``values``."""
        plan = {(kind, where): f for kind, where, f in self.plans[method]}
        value = {(kind, where): values.get(option_key(method, f.name), f.default) for (kind, where), f in plan.items()}
        groups = [gr.Group(visible=("slider", where) in plan) for where in self.slider_groups]
        sliders = [value.get(("slider", where), gr.skip()) for where in self.slider_widgets]
        slots = []
        for key in self.slots:
            f = plan.get(key)
            if f is None:
                slots.append(gr.update(visible=False))
                continue
            choices = {"choices": list(f.metadata["choices"])} if key[0] == "dropdown" else {}
            slots.append(gr.update(visible=True, label=f.name, info=f.metadata.get("help", ""), value=value[key],
                                   **choices))
        return [gr.Markdown(self.no_options(method), visible=not plan), *groups, *sliders, *slots]

    def show_requested(self, requested: tuple | None, values: dict) -> list:
        return gr.skip() if not requested else self.show(requested[0], values)

    def store(self, method: str, values: dict, *shown_values) -> dict:
        """``values`` with ``method``'s options as its widgets show them."""
        placed = dict(zip([("slider", where) for where in self.slider_widgets] + list(self.slots), shown_values))
        typed = {option_key(method, f.name): placed[kind, where]
                 for kind, where, f in self.plans[method]}
        return values if all(values.get(k) == v for k, v in typed.items()) else {**values, **typed}
