"""Calculator tab: exact trainable parameters, memory and FLOPs of every method, live.

Every control change recomputes the analytical formulas at once; a follow-up event builds the
method for real on the meta device (once per combination, cached) and marks the headline when the
exact count agrees with the formula.
"""

from __future__ import annotations

import dataclasses
import json

import gradio as gr
import pandas as pd

from .. import calculator
from ..calculator import exact
from ..costs import memory
from ..errors import ExplorerError
from ..methods import DEFAULT_METHOD, METHODS
from ..train import track_record
from . import calculator_view as view
from .common import Latest, api_errors, shows_errors
from .model_lists import PASTE, model_choices
from .widgets import method_option_groups, options_of, show_only, widget_for


def compute(model_name, config_text, method_name, widget_keys, values, settings_values, exact_mode):
    options = options_of(method_name, widget_keys, values)
    settings = dict(zip([f.name for f in dataclasses.fields(memory.TrainSettings)], settings_values))
    if model_name == PASTE and not (config_text or "").strip():
        raise ExplorerError("Paste a config.json (or upload one) to use a custom model.")
    return calculator.from_request(model_name, method_name, {**options, **settings}, exact_mode=exact_mode,
                                   config_text=config_text if model_name == PASTE else None)


OUTPUTS = 9  # headline, formula, FLOPs table, card, memory chart, fits table, family chart, family table, breakdown
confirmed = Latest()  # the inputs each browser session asked about last: an older exact count never shows


# After an error: the message, and empty tables and charts: nothing of the previous model stays on screen
# looking like this one's numbers.
CLEARED = {1: pd.DataFrame(), 2: pd.DataFrame(), 3: "", 4: None, 5: pd.DataFrame(), 6: None, 7: pd.DataFrame(),
           8: ""}


def update(widget_keys, model_name, text, method_name, *values, request: gr.Request | None = None):
    """Every number of the page from the formulas (the exact count only if it is cached already)."""
    confirmed.set(request, (model_name, text, method_name, values))
    return _update(widget_keys, model_name, text, method_name, *values)


@shows_errors(outputs=OUTPUTS, blank=CLEARED)
def _update(widget_keys, model_name, text, method_name, *values):
    n = len(widget_keys)
    r = compute(model_name, text, method_name, widget_keys, values[:n], values[n:], "cached")
    family_results = calculator.compare_all(r.spec, r.settings, (r.method, r.options))
    return (view.headline(r), view.formula_table(r), view.flops_table(r), view.method_card(r),
            view.memory_figure(r), view.fits_table(r), view.family_figure(family_results),
            view.family_table(family_results), view.memory_breakdown(r, track_record.records()))


@shows_errors()
def confirm_exact(widget_keys, model_name, text, method_name, *values, request: gr.Request | None = None):
    """The headline again once the method was built on the meta device and counted; skipped when the user
    has moved on meanwhile (a stale count must never carry the "Verified" mark)."""
    n = len(widget_keys)
    asked = (model_name, text, method_name, values)
    if not confirmed.is_current(request, asked):
        return gr.skip()
    r = compute(model_name, text, method_name, widget_keys, values[:n], values[n:], "compute")
    return view.headline(r) if confirmed.is_current(request, asked) else gr.skip()


def load_upload(path):
    if not path:
        return gr.skip(), gr.skip()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(1_000_000)
        json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return gr.skip(), f"// not a valid config.json: {error}"
    return PASTE, text


@api_errors
def calc(model: str, method: str, options_json: str = "{}", config_json: str = "", wait_for_exact: bool = True) -> dict:
    """The calculator as an API: exact counts, memory and FLOPs as JSON (errors as {"error": text}).

    wait_for_exact=False answers at once, as the page does: the formulas' numbers with "exact": false and
    "exact_pending": true while PEFT builds the method on the meta device in the background (once per
    combination, whoever asks); asked again later, the same question has "exact": true and the same count."""
    try:
        values = json.loads(options_json or "{}")
    except json.JSONDecodeError as error:
        raise ExplorerError(f"options are not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ExplorerError("options must be a JSON object of option and setting names.")
    config_text = config_json or None
    if wait_for_exact:
        return calculator.from_request(model, method, values, exact_mode="compute", config_text=config_text).as_json()
    result = calculator.from_request(model, method, values, exact_mode="cached", config_text=config_text)
    if result.exact_counts is None:
        refusal = exact.refused(result.spec, result.method, result.options)
        if refusal:
            raise ExplorerError(refusal)  # what waiting would have answered
        exact.in_background(result.spec, result.method, result.options)  # a full queue: queued when asked again
    return {**result.as_json(), "exact_pending": result.exact_counts is None}


def create_calculator_tab() -> dict:
    gr.Markdown("Pick a model and a method: every number below is computed for that exact architecture. "
                "Formulas answer instantly; PEFT then builds the method on a weightless (meta-device) copy "
                "of the model to confirm the count.")
    with gr.Row():
        model = gr.Dropdown(model_choices(catalog=True, paste=True), value="llama-2-7b", label="Base model", scale=2, elem_id="calc-model",
                            info="Real published configs; runnable models; or your own config.json")
        method = gr.Dropdown([(m.title, name) for name, m in METHODS.items()], value=DEFAULT_METHOD, label="Method",
                             scale=1, elem_id="calc-method")
    with gr.Accordion("Custom config.json", open=False):
        config_text = gr.Code(language="json", label="Paste a config.json, then choose 'Pasted or uploaded "
                              "config.json' as the base model", elem_id="calc-config")
        upload = gr.File(label="…or upload one", file_types=[".json"], type="filepath")
    widget_keys, widgets, groups = method_option_groups("calc")
    fields = dataclasses.fields(memory.TrainSettings)
    first_gpu_field = [f.name for f in fields].index("mixed_precision")
    with gr.Row():
        settings_widgets = [widget_for(f, f"calc-setting-{f.name}") for f in fields[:first_gpu_field]]
    with gr.Row():  # precision and GPUs: the per-GPU memory and the GPUs × count table follow them
        settings_widgets += [widget_for(f, f"calc-setting-{f.name}") for f in fields[first_gpu_field:]]

    headline = gr.Markdown(elem_id="calc-headline")
    with gr.Row():
        with gr.Column(scale=3):
            formula = gr.Dataframe(label="Trainable parameters: the formula, module by module",
                                   interactive=False, elem_id="calc-formula", wrap=True)
            flops = gr.Dataframe(label="FLOPs per token", interactive=False, elem_id="calc-flops", wrap=True,
                                 column_widths=["36%", "14%", "50%"])
        with gr.Column(scale=2):
            card = gr.HTML(elem_id="calc-card")
    with gr.Row():
        memory_plot = gr.Plot(label="Training and inference memory", elem_id="calc-memory")
        fits = gr.Dataframe(label="Fits on: GPU size × number of GPUs (each GPU holds its share under the chosen "
                            "sharding)", interactive=False, elem_id="calc-fits", wrap=True)
    breakdown = gr.Markdown(elem_id="calc-memory-breakdown")
    family_plot = gr.Plot(label="All methods at these settings", elem_id="calc-family-plot")
    family = gr.Dataframe(label="All methods at these settings (defaults for the others)", interactive=False,
                          elem_id="calc-family", wrap=True)
    with gr.Accordion("Textbook check: the Llama-2-7B figures of the textbook section \"The PEFT family — "
                      "adapters, prefix, IA³, prompt tuning\" against exact values", open=True):
        gr.Dataframe(value=view.textbook_table, interactive=False, wrap=True, elem_id="calc-textbook",
                     column_widths=["22%", "12%", "18%", "8%", "40%"])

    outputs = [headline, formula, flops, card, memory_plot, fits, family_plot, family, breakdown]
    inputs = [model, config_text, method, *widgets, *settings_widgets]

    def on_update(request: gr.Request, *values):  # gradio passes the request to a leading parameter
        return update(widget_keys, *values, request=request)

    def on_confirm(request: gr.Request, *values):
        return confirm_exact(widget_keys, *values, request=request)

    method.change(lambda m: show_only(groups, m), method, list(groups.values()), api_visibility="private")
    upload.upload(load_upload, upload, [model, config_text], api_visibility="private")
    for component in inputs:
        event = component.change(on_update, inputs, outputs, trigger_mode="always_last", show_progress="hidden",
                                 api_visibility="private")
        event.then(on_confirm, inputs, headline, trigger_mode="always_last", show_progress="hidden",
                   api_visibility="private")
    gr.api(calc, api_name="calc")
    return {"update": on_update, "confirm": on_confirm, "inputs": inputs, "outputs": outputs, "headline": headline,
            "model": model}
