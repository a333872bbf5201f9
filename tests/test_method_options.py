"""The method option widgets: a few shared widgets show any method's options, and the page stays small."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pytest

from explorer.methods import DEFAULT_METHOD, METHODS
from explorer.ui.method_options import MethodOptions, option_defaults, placements
from explorer.ui.widgets import option_key


@pytest.fixture(scope="module", params=[True, False], ids=["calculator", "fine-tune"])
def options(request):
    with gr.Blocks():
        method = gr.Dropdown(list(METHODS), value=DEFAULT_METHOD)
        return MethodOptions("t", method, sliders=request.param)


def shown_fields(options: MethodOptions, method: str, values: dict) -> dict:
    """{label: value} of the widgets ``show`` makes visible, and the values the widgets then hold."""
    updates = options.show(method, values)
    note, rest = updates[0], updates[1:]
    groups = rest[:len(options.slider_groups)]
    slider_values = rest[len(groups):len(groups) + len(options.slider_widgets)]
    slot_updates = rest[len(groups) + len(slider_values):]
    visible = {}
    for group, (name, _), widget_value in zip(groups, options.slider_groups, slider_values):
        if group.visible:
            visible[name] = widget_value
    for update in slot_updates:
        if update.get("visible"):
            visible[update["label"]] = update["value"]
    held = [v if g.visible else None for g, v in zip(groups, slider_values)] + \
           [u.get("value") if u.get("visible") else None for u in slot_updates]
    return {"visible": visible, "no_options": note.visible, "held": held}


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_shows_exactly_its_options_and_stores_them_back(options, method):
    fields = dataclasses.fields(METHODS[method].options_type)
    values = option_defaults()
    shown = shown_fields(options, method, values)
    assert shown["visible"] == {f.name: f.default for f in fields}
    assert shown["no_options"] == (not fields)
    assert options.store(method, values, *shown["held"]) == values  # nothing typed: the same state back


def test_a_value_typed_for_one_method_is_kept_while_another_is_picked(options):
    values = option_defaults()
    lora = shown_fields(options, "lora", values)["held"]
    kind, where, _ = next(p for p in placements("lora", options.sliders) if p[2].name == "r")
    places = [("slider", w) for w in options.slider_widgets] + list(options.slots)
    r_at = places.index((kind, where))
    typed = list(lora)
    typed[r_at] = 24
    values = options.store("lora", values, *typed)
    assert values[option_key("lora", "r")] == 24
    assert shown_fields(options, "ia3", values)["visible"].get("r") is None
    assert shown_fields(options, "lora", values)["visible"]["r"] == 24
    assert values[option_key("vera", "r")] == option_defaults()[option_key("vera", "r")]  # only LoRA's r changed


def test_the_widgets_do_not_grow_with_the_number_of_methods(options):
    """A hidden set of widgets per method (348 with 50 methods, in each tab) cost chromium about 2.5 s per tab and
    page load; the shared widgets number the most any one method needs of each kind, plus the distinct sliders."""
    most = max(len(dataclasses.fields(m.options_type)) for m in METHODS.values())
    total = sum(len(dataclasses.fields(m.options_type)) for m in METHODS.values())
    assert most <= len(options.slots) + len(options.slider_widgets) < total / 4


def test_the_whole_page_stays_small():
    from explorer.ui.app import build_app

    app = build_app()
    assert len(app.blocks) < 700, f"{len(app.blocks)} components: every one is sent to and built by each browser"
