"""Widgets built from option dataclasses, shared by the Calculator and Fine-tune tabs."""

from __future__ import annotations

import dataclasses

import gradio as gr


SLIDERS = {"r": (1, 256), "num_virtual_tokens": (1, 200), "bottleneck_dim": (1, 512), "batch_size": (1, 64),
           "encoder_hidden_size": (1, 4096), "lora_alpha": (1, 512), "steps": (1, 500)}


def named_slider(minimum, maximum, **kwargs) -> gr.Slider:
    """A slider whose out-of-range message names its field.

    gradio checks a typed value against the range itself, and its message ("Value 1000 is greater than
    maximum value 64.") names no field, and it logs a traceback. (A subclass of gr.Slider would do the
    same, but gradio writes a .pyi file beside any module that subclasses a component.)"""
    slider = gr.Slider(minimum, maximum, **kwargs)
    check = slider.preprocess

    def preprocess(payload):
        try:
            return check(payload)
        except gr.Error:
            raise gr.Error(f"{slider.label} must be between {slider.minimum:g} and {slider.maximum:g} (you "
                           f"typed {payload:g}). That value was not used.",
                           title=f"{slider.label} out of range", print_exception=False) from None

    slider.preprocess = preprocess
    return slider


def widget_for(f: dataclasses.Field, elem_id: str, sliders: bool = True):
    """A widget for one option field; its help text is shown as the widget's info line.

    ``sliders=False``: whole numbers get a plain number box instead of a slider. A slider's box snaps a typed
    value into its range without a word; where a run is started from the values (Fine-tune), an
    out-of-range value must be refused with a message instead (explorer.options.coerce says which)."""
    meta, label, value = f.metadata, f.name, f.default
    info = meta.get("help", "")
    kind = kind_of(f, sliders)
    if kind == "slider":
        lo, hi = SLIDERS[f.name]
        return named_slider(lo, hi, value=value, step=1, label=label, info=info, elem_id=elem_id)
    extra = {"choices": list(meta["choices"])} if kind == "dropdown" else {}
    return KINDS[kind](**extra, value=value, label=label, info=info, elem_id=elem_id)


KINDS = {"number": gr.Number, "dropdown": gr.Dropdown, "checkbox": gr.Checkbox, "textbox": gr.Textbox}


def kind_of(f: dataclasses.Field, sliders: bool = True) -> str:
    """Which widget shows an option field: "slider", or one of KINDS."""
    default = f.default
    if isinstance(default, bool):
        return "checkbox"
    lo, hi = SLIDERS.get(f.name, (0, 0))
    if isinstance(default, int) and f.name in SLIDERS and sliders and lo <= default <= hi:  # OFT's r: 0 = unset
        return "slider"
    if isinstance(default, (int, float)):
        return "number"
    return "dropdown" if f.metadata.get("choices") else "textbox"


def option_key(method: str, field: str) -> str:
    """A method option's name in a tab's form and option state ("lora.r")."""
    return f"{method}.{field}"

