"""Tabs that later releases fill. They say what they will do and pretend nothing."""

import gradio as gr

PLANNED = {
    "Fine-tune": "Run a short, real fine-tune of any method on the bundled model, with a live loss curve, "
                 "a stop button and saved adapters.",
    "Compare": "Put the base, adapted and merged models side by side, with merge fidelity and measured "
               "latency overhead.",
    "Learn": "A guide to each method, a decision helper, and an experiment that tests whether adapters compose.",
}


def create_placeholder_tab(name: str) -> None:
    gr.Markdown(f"**Not built yet.** This tab will: {PLANNED[name]}")
