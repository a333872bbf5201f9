"""Assemble the tabs into one Gradio Blocks app."""

from __future__ import annotations

import os

import gradio as gr

from .calculator_tab import create_calculator_tab
from .compare_tab import create_compare_tab
from .finetune_tab import create_finetune_tab
from .learn_tab import create_learn_tab
from .model_lists import ModelPickers
from .models_tab import create_models_tab
from .race_tab import create_race_tab

CSS = """
#gen-stats { min-height: 2em; }
.method-card p { margin: 0.3em 0; }
.learn-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; }
.learn-card { border: 1px solid #ddd; border-radius: 8px; padding: 10px; }
.learn-card h3 { margin: 0 0 6px 0; }
.learn-card p, .learn-card li { margin: 0.25em 0; font-size: 0.92em; }
.learn-card .card-numbers { background: #f4f4f5; padding: 4px 6px; border-radius: 4px; }
.learn-card .card-svg svg { max-width: 100%; height: auto; }
.cmp-table { width: 100%; border-collapse: collapse; table-layout: fixed; }
.cmp-table th, .cmp-table td { border: 1px solid #ddd; padding: 6px; vertical-align: top; white-space: pre-wrap;
                              overflow-wrap: anywhere; }
.cmp-table .cmp-prompt { background: #f4f4f5; font-style: italic; }
.cmp-table .cmp-none { color: #777; }
.cmp-table mark, .cmp-legend mark { background: #ffe08a; padding: 0; }
/* Table headers break between words, never inside one ("metho d"). */
#ft-runs th span, #race-table th span, #models-table th span { word-break: normal !important;
                                                              overflow-wrap: normal !important; }
/* A reply without spaces must wrap, not push the other columns off-screen. */
#compose-replies tbody td span, #models-table tbody td span, #calc-flops tbody td span,
#calc-textbook tbody td span { overflow-wrap: anywhere; word-break: break-word; }
"""


def build_app() -> gr.Blocks:
    # Gradio summarises every finished event's timing with pandas over its last 10,000 events, for its
    # monitoring page (gradio/queueing.py: Queue.compute_analytics_summary, read when the queue is made): ~7 ms
    # of server CPU per Calculator answer by default. Once every 1000 events leaves that CPU to the users.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    with gr.Blocks(title="PEFT Explorer") as demo:
        gr.Markdown("# PEFT Explorer\nExplore the tradeoffs of parameter-efficient fine-tuning: "
                    "what each method costs, how it trains, and what merging changes.")
        with gr.Tabs() as tabs:
            with gr.Tab("Calculator", id="calculator") as calc_tab:
                calc = create_calculator_tab()
            with gr.Tab("Race", id="race") as race_tab:
                race = create_race_tab()
            with gr.Tab("Fine-tune", id="finetune") as tune_tab:
                tune = create_finetune_tab()
            with gr.Tab("Models", id="models") as models_tab:
                gen = create_models_tab()
            with gr.Tab("Compare", id="compare") as compare_tab:
                comp = create_compare_tab()
            # Opening the tab lists runs finished since the page loaded, newest first.
            compare_tab.select(comp["refresh"], comp["run"], [comp["run"], comp["info"]], api_visibility="private")

            def open_in_compare(run_id):
                """The selected run, opened in the Compare tab (it must have saved an adapter)."""
                if not run_id:
                    return (gr.skip(), gr.skip(), gr.skip(),
                            "**No run selected:** start one above, or click a run in the table, then compare it.")
                dropdown, info = comp["refresh"](run_id)
                return gr.Tabs(selected="compare"), dropdown, info, gr.skip()

            tune["to_compare"].click(open_in_compare, tune["run_id"],
                                     [tabs, comp["run"], comp["info"], tune["progress"]], api_visibility="private")
            race["opened"].change(open_in_compare, race["opened"], [tabs, comp["run"], comp["info"], tune["progress"]],
                                  api_visibility="private")
            with gr.Tab("Learn", id="learn") as learn_tab:
                learn = create_learn_tab()
        # Models exported from Compare or copied into models_cache join every picker without a restart.
        pickers = ModelPickers()
        pickers.add(calc["model"], catalog=True, paste=True)
        pickers.add(tune["model"])
        pickers.add(race["model"])
        pickers.add(gen["model"])
        for dropdown in learn["models"]:
            pickers.add(dropdown, catalog=True)
        for tab in (calc_tab, race_tab, tune_tab, models_tab, learn_tab):
            pickers.refresh_on(tab.select)
        pickers.refresh_on(gen["refresh"].click)
        pickers.refresh_on(demo.load)
        # Fill the calculator once the page is there (formulas first, then the exact count).
        for handler, inputs, output in (tune["estimate"], tune["recommend"], race["preview"]):
            demo.load(handler, inputs, output, api_visibility="private", show_progress="hidden")
        demo.load(calc["update"], calc["inputs"], calc["outputs"], api_visibility="private").then(
            calc["confirm"], calc["inputs"], calc["headline"], api_visibility="private").then(
            *learn["versus"], api_visibility="private")
    return demo
