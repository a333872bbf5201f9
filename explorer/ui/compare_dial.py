"""Compare page component: forgetting you can dial back. A LoRA run's task score and general questions answered
at several adapter strengths and PEFT intruder-dimension settings, drawn as one curve with a sentence computed
from the points. All numbers come from explorer.compare.forgetting_dial."""

from __future__ import annotations

import html

import gradio as gr
import plotly.graph_objects as go

from ..compare import forgetting_dial
from ..errors import ExplorerError
from .common import shows_errors
from .widgets import named_slider

COLOURS = {"strength": "#1f77b4", "intruder": "#d62728"}
NAMES = {"strength": "adapter strength", "intruder": "intruder dimensions reduced (PEFT mitigation_lambda)"}


def dial_figure(result: dict) -> go.Figure:
    """x: task score, y: general questions answered; one line per dial, each point labelled with its setting,
    the base model as a grey marker."""
    n = result["probe_count"]
    figure = go.Figure()
    base = result["base"]
    figure.add_trace(go.Scatter(x=[base["task_score"]], y=[base["probe_right"]], mode="markers+text",
                                text=["base model"], textposition="bottom center", name="base model",
                                marker={"color": "#7f7f7f", "size": 11, "symbol": "diamond"}))
    for kind in ("strength", "intruder"):
        points = [p for p in result["points"] if p["kind"] == kind]
        if not points:
            continue
        figure.add_trace(go.Scatter(
            x=[p["task_score"] for p in points], y=[p["probe_right"] for p in points], mode="lines+markers+text",
            text=[p["setting"] for p in points], textposition="top center", name=NAMES[kind],
            line={"color": COLOURS[kind]}, marker={"size": 9},
            hovertemplate="%{text}<br>task score %{x:.2f}<br>%{y} of " + str(n) + " general questions<extra></extra>"))
    figure.update_layout(
        title=f"How much general knowledge comes back for how much of the task ({result['run_id']})",
        xaxis_title=f"task score ({result['task']}, {result['examples']} held-out rows, greedy)",
        yaxis_title=f"general questions answered (of {n})", height=420, legend={"orientation": "h", "y": -0.25})
    figure.update_yaxes(range=[-0.5, n + 0.8])
    figure.update_xaxes(range=[-0.05, 1.05])
    return figure


def dial_text(result: dict) -> str:
    lines = [html.escape(result["reading"])]
    if result["intruder_note"]:
        lines.append(html.escape(result["intruder_note"]))
    for p in result["points"]:
        if p["kind"] == "intruder":
            lines.append(f"At {html.escape(p['setting'])}, {p['layers_with_intruders']} of {p['lora_layers']} "
                         "LoRA layers had intruder dimensions (the others are unchanged).")
            break
    lines.append(f"Measured on {result['examples']} held-out rows and {result['probe_count']} general questions, "
                 f"greedy, {result['max_new_tokens']} new tokens per reply, one generation per setting.")
    return "\n\n".join(lines)


@shows_errors(outputs=2, blank={1: gr.Plot(visible=False)})
def do_dial(run_id, strengths, intruder, examples, probe_questions, max_tokens):
    if not run_id:
        raise ExplorerError("Choose a run first (train a LoRA run in the Fine-tune tab).")
    result = forgetting_dial.dial(run_id, strengths or "", intruder or "", examples=int(examples),
                                  probe_count=int(probe_questions), max_new_tokens=int(max_tokens))
    return dial_text(result), gr.Plot(dial_figure(result), visible=True)


def create_dial(run_dropdown) -> dict:
    """The dial's controls, curve and sentence, measuring the run chosen in ``run_dropdown``."""
    with gr.Accordion("Forgetting you can dial back", open=False, elem_id="compare-dial"):
        gr.Markdown("A fine-tune can learn its task and lose general knowledge. Turn the adapter down (PEFT's "
                    "scaling: 0 = the base, 1 = as trained), or shrink its *intruder dimensions* (PEFT's "
                    "reduce_intruder_dimension: directions of the update unlike any of the base weights'), "
                    "and see how many general questions come back for how much of the task. LoRA-family runs.")
        support = forgetting_dial.intruder_support()
        with gr.Row():
            strengths = gr.Textbox("0,0.25,0.5,0.75,1", label="adapter strengths (0 to 1; 1 is always measured)",
                                   elem_id="compare-dial-strengths")
            intruder = gr.Textbox("" if support else "1,0.5,0", label="intruder mitigation_lambda (1 = unchanged, "
                                  "0 = intruder directions removed; empty = none)", elem_id="compare-dial-intruder",
                                  interactive=support is None, info=support)
        with gr.Row():
            examples = named_slider(1, 64, value=4, step=1, label="held-out rows per setting",
                                    elem_id="compare-dial-examples")
            probe_questions = named_slider(1, 80, value=10, step=1, label="general questions per setting",
                                           elem_id="compare-dial-probe")
            max_tokens = named_slider(1, 128, value=16, step=1, label="max new tokens",
                                      elem_id="compare-dial-tokens")
        go_button = gr.Button("Measure the dial", elem_id="compare-dial-go")
        reading = gr.Markdown(elem_id="compare-dial-reading")
        chart = gr.Plot(visible=False, elem_id="compare-dial-chart")
    go_button.click(do_dial, [run_dropdown, strengths, intruder, examples, probe_questions, max_tokens],
                    [reading, chart], api_visibility="private")
    return {"button": go_button, "reading": reading, "chart": chart}
