"""The Learn tab's "one base, many adapters": several LoRA runs answered by one base in one mixed batch, with
measured memory and throughput and the Calculator's figures for thousands of adapters.

All numbers come from explorer.compare.serve_many (inference in the web server, as Compare does); this file
turns widget values into that call and draws what it returns.
"""

from __future__ import annotations

from html import escape

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..compare import serve_many
from ..errors import ExplorerError
from ..train import runs
from .common import shows_errors
from .model_lists import model_choices
from .widgets import named_slider

GIB, MIB = 2 ** 30, 2 ** 20


def servable_runs() -> list[tuple[str, str]]:
    """Finished runs whose adapters PEFT serves in mixed batches (the method says so)."""
    return [(f"{run.run_id} · {run.config.method} · {run.config.model} · {run.dataset_label}", run.run_id)
            for run in runs.list_runs()
            if run.state == "done" and run.has_adapter and run.method is not None and run.method.mixed_batch]


def replies_html(result: dict) -> str:
    """One row per prompt, one column per adapter (the base first); every text escaped."""
    labels = list(result["replies"])
    datasets = {a["label"]: a["dataset"] for a in result["adapters"]}
    head = "".join(f"<th>{escape(label)}" + (f"<br><small>{escape(datasets[label])}</small>" if datasets.get(label)
                                             else "") + "</th>" for label in labels)
    rows = []
    for i, prompt in enumerate(result["prompts"]):
        cells = "".join(f"<td>{escape(result['replies'][label][i])}</td>" for label in labels)
        rows.append(f'<tr><td colspan="{len(labels)}" class="cmp-prompt">Prompt: {escape(prompt)}</td></tr>'
                    f"<tr>{cells}</tr>")
    checks = "".join(f"<li>{escape(label)}: greedy reply {'identical' if result['greedy_match'][label] else 'DIFFERENT'}"
                     f", largest logit difference {result['max_abs_logit_diff'][label]:.2g}</li>" for label in labels)
    return (f'<table class="cmp-table" id="serve-columns"><tr>{head}</tr>{"".join(rows)}</table>'
            f"<p>All {result['batch_rows']} rows came from <b>one</b> generate call. Each against that adapter "
            f"alone:</p><ul>{checks}</ul>")


def measured_figure(result: dict) -> go.Figure:
    memory, speed = result["memory"], result["throughput"]
    n = len(result["runs"])
    fig = make_subplots(rows=1, cols=2, subplot_titles=["memory held (MiB, measured)", "tokens per second (measured)"])
    fig.add_bar(x=[f"1 base + {n} adapters", f"{n} merged copies"],
                y=[memory["shared_base_and_adapters_bytes"] / MIB, memory["merged_copies_bytes"] / MIB],
                marker_color=["#1f77b4", "#9e9e9e"], row=1, col=1, showlegend=False)
    names = {"mixed_batch": "mixed batch", "merged_in_turn": "merged models in turn",
             "swap_per_request": "swap adapter per request"}
    fig.add_bar(x=list(names.values()), y=[speed["tokens_per_second"][k] for k in names],
                marker_color=["#1f77b4", "#9e9e9e", "#ff7f0e"], row=1, col=2, showlegend=False)
    fig.update_layout(height=320, margin=dict(l=40, r=10, t=70, b=30))
    return fig


def calculator_figure(figures: dict) -> go.Figure:
    x = [r["adapters"] for r in figures["rows"]]
    fig = go.Figure()
    for key, name in (("base_4bit_plus_adapters_bytes", "one 4-bit base + N adapters"),
                      ("base_bf16_plus_adapters_bytes", "one bf16 base + N adapters"),
                      ("merged_bf16_copies_bytes", "N merged bf16 copies")):
        fig.add_scatter(x=x, y=[r[key] / GIB for r in figures["rows"]], mode="lines+markers", name=name)
    fig.update_xaxes(type="log", title="fine-tunes served (N)")
    fig.update_yaxes(type="log", title="GiB of weights")
    fig.update_layout(height=360, margin=dict(l=50, r=10, t=40, b=40),
                      title=f"The Calculator: {figures['model']}, {figures['adapter_trainable_params']:,} adapter "
                            f"parameters each ({figures['adapter_bytes'] / MIB:,.0f} MiB in float32)")
    return fig


def costs_markdown(result: dict) -> str:
    memory, speed, figures = result["memory"], result["throughput"], result["calculator"]
    tps = speed["tokens_per_second"]
    last = figures["rows"][-1]
    fits = last["base_4bit_plus_adapters_bytes"] / 80 / GIB
    return (f"**Measured here** ({speed['requests']} requests of {speed['new_tokens_per_request']} tokens, median of "
            f"{speed['repeats']}, {speed['device']}; a busy machine moves these): mixed batch {tps['mixed_batch']:.1f} "
            f"tokens/s, merged models in turn {tps['merged_in_turn']:.1f}, swapping adapters per request "
            f"{tps['swap_per_request']:.1f}. Memory: the base with {len(result['runs'])} adapters "
            f"{memory['shared_base_and_adapters_bytes'] / MIB:,.1f} MiB against "
            f"{memory['merged_copies_bytes'] / MIB:,.1f} MiB for merged copies.\n\n"
            f"**The textbook section claims** one frozen 4-bit base \"scales to thousands of customised behaviours\". **The "
            f"Calculator** for {last['adapters']:,} of these adapters on {figures['model']}: "
            f"{last['base_4bit_plus_adapters_bytes'] / GIB:,.0f} GiB (base {figures['base_4bit_bytes'] / GIB:,.1f} GiB "
            f"+ adapters: the weights alone fill about {fits:,.1f} accelerators of 80 GiB) against {last['merged_bf16_copies_bytes'] / GIB:,.0f} GiB of "
            f"merged bf16 copies. At this rank and these target layers the adapters, not the base, dominate "
            f"beyond {max(1, round(figures['base_4bit_bytes'] / figures['adapter_bytes'])):,} of them.")


@shows_errors(outputs=5, blank={1: "", 2: gr.Plot(visible=False), 3: gr.Plot(visible=False), 4: ""})
def do_serve(run_ids, prompts, tokens, measure, large_model):
    if not run_ids:
        raise ExplorerError("Choose one or more finished LoRA runs on one base model (train them in the Fine-tune tab).")
    result = serve_many.serve(run_ids, prompts, int(tokens), measure_costs=bool(measure),
                              large_model=large_model or "llama-2-70b")
    if not measure:
        return escape(result["summary"]), replies_html(result), gr.Plot(visible=False), gr.Plot(visible=False), ""
    return (escape(result["summary"]), replies_html(result), gr.Plot(measured_figure(result), visible=True),
            gr.Plot(calculator_figure(result["calculator"]), visible=True), costs_markdown(result))


def create_serving_section() -> None:
    gr.Markdown("The textbook section: LoRA is \"multi-tenant friendly — one frozen base; swap LoRA adapters per customer; "
                "scales to thousands of customised behaviours\". Pick several finished LoRA runs on one base: PEFT "
                "answers every adapter, and the base, in ONE batch (each row names its adapter), and each reply is "
                "checked against that adapter's own.")
    with gr.Row():
        chosen = gr.Dropdown(servable_runs(), multiselect=True, label="Runs to serve from one base",
                             elem_id="serve-runs", scale=4)
        refresh = gr.Button("Refresh runs", scale=0, elem_id="serve-refresh")
    with gr.Row():
        prompts = gr.Textbox("Where is the treasure?\nWhat is the capital of France?", lines=2, scale=3,
                             label="Prompts (one per line)", elem_id="serve-prompts")
        with gr.Column(scale=2):
            tokens = named_slider(1, 128, value=24, step=1, label="max new tokens")
            measure = gr.Checkbox(True, label="Measure memory and speed (builds each merged copy in turn)",
                                  elem_id="serve-measure")
            large = gr.Dropdown(model_choices(catalog=True), value="llama-2-70b", label="Large model for the "
                                "Calculator's figures (up to 1,000 adapters)", elem_id="serve-large")
    go_button = gr.Button("Serve them in one batch", variant="primary", elem_id="serve-go")
    summary = gr.Markdown(elem_id="serve-summary")
    replies = gr.HTML(elem_id="serve-replies")
    measured = gr.Plot(visible=False, elem_id="serve-measured")
    fleet = gr.Plot(visible=False, elem_id="serve-calculator")
    costs = gr.Markdown(elem_id="serve-costs")

    refresh.click(lambda: gr.Dropdown(choices=servable_runs()), None, chosen, api_visibility="private")
    go_button.click(do_serve, [chosen, prompts, tokens, measure, large], [summary, replies, measured, fleet, costs],
                    api_visibility="private")
