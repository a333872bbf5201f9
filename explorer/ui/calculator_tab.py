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
from ..methods import DEFAULT_METHOD, METHODS, NOT_OFFERED
from ..train import track_record
from . import calculator_view as view
from .common import Latest, api_errors, shows_errors
from .model_lists import PASTE, model_choices
from .method_options import MethodOptions, option_defaults
from .widgets import option_key, widget_for


SETTING_FIELDS = dataclasses.fields(memory.TrainSettings)


def calc_form(model: str, method: str = DEFAULT_METHOD, config: str = "", **values) -> dict:
    """What the tab's widgets send, by name, every unnamed widget at its default ("lora.r" for LoRA's rank,
    "batch_size" for a training setting): the tests build requests with it."""
    form = {"model": model, "config": config, "method": method}
    form.update(option_defaults())
    form.update({f.name: f.default for f in SETTING_FIELDS})
    form.update(values)
    return form


def compute(form: dict, exact_mode: str):
    model_name, config_text, method_name = form["model"], form["config"], form["method"]
    options = {f.name: form[option_key(method_name, f.name)] for f in dataclasses.fields(METHODS[method_name].options_type)
               if option_key(method_name, f.name) in form} if method_name in METHODS else {}
    settings = {f.name: form[f.name] for f in SETTING_FIELDS if f.name in form}
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


def asked(form: dict) -> tuple:
    return tuple(sorted(form.items(), key=lambda item: item[0]))


def update(form: dict, request: gr.Request | None = None):
    """Every number of the page from the formulas (the exact count only if it is cached already)."""
    confirmed.set(request, asked(form))
    return _update(form)


@shows_errors(outputs=OUTPUTS, blank=CLEARED)
def _update(form: dict):
    r = compute(form, "cached")
    family_results = calculator.compare_all(r.spec, r.settings, (r.method, r.options))
    return (view.headline(r), view.formula_table(r), view.flops_table(r), view.method_card(r),
            view.memory_figure(r), view.fits_table(r), view.family_figure(family_results),
            view.family_table(family_results), view.memory_breakdown(r, track_record.records()))


@shows_errors()
def confirm_exact(form: dict, request: gr.Request | None = None):
    """The headline again once the method was built on the meta device and counted; skipped when the user
    has moved on meanwhile (a stale count must never carry the "Verified" mark)."""
    if not confirmed.is_current(request, asked(form)):
        return gr.skip()
    r = compute(form, "compute")
    return view.headline(r) if confirmed.is_current(request, asked(form)) else gr.skip()


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
    with gr.Accordion(f"{len(METHODS)} methods here; PEFT's methods not offered, and why", open=False,
                      elem_id="calc-not-offered"):
        gr.Markdown("\n".join(f"- **{title}**: {why}" for title, why in NOT_OFFERED.values()))
    with gr.Accordion("Custom config.json", open=False):
        config_text = gr.Code(language="json", label="Paste a config.json, then choose 'Pasted or uploaded "
                              "config.json' as the base model", elem_id="calc-config")
        upload = gr.File(label="…or upload one", file_types=[".json"], type="filepath")
    options = MethodOptions("calc", method)
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
    named = {"model": model, "config": config_text, "method": method,
             **{f.name: w for f, w in zip(fields, settings_widgets)}}
    inputs = set(named.values()) | {options.values}

    def read(data: dict) -> dict:
        """The form by name (gradio passes a set of inputs as one {component: value} dict): the widgets' values
        and every method's options."""
        return {**data[options.values], **{name: data[widget] for name, widget in named.items()}}

    def on_update(data: dict, request: gr.Request):
        return update(read(data), request=request)

    def on_confirm(data: dict, request: gr.Request):
        return confirm_exact(read(data), request=request)

    upload.upload(load_upload, upload, [model, config_text], api_visibility="private")
    # One listener for every control (a listener per control listed every input again, in the config every
    # page load fetches); it also lets "always_last" coalesce changes across controls.
    event = gr.on([*(component.change for component in named.values()), options.values.change], on_update, inputs,
                  outputs, trigger_mode="always_last", show_progress="hidden", api_visibility="private")
    event.then(on_confirm, inputs, headline, trigger_mode="always_last", show_progress="hidden",
               api_visibility="private")
    gr.api(calc, api_name="calc")
    return {"update": on_update, "confirm": on_confirm, "inputs": inputs, "outputs": outputs, "headline": headline,
            "model": model}
