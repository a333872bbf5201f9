"""Models tab: the runnable models, and a prompt box that generates from the chosen one."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from .. import generate
from ..models import provision
from ..models import loading, registry
from .common import shows_errors
from .model_lists import model_choices
from .widgets import named_slider

COLUMNS = ["name", "architecture", "parameters", "layers", "hidden_size", "vocab_size", "stored_at", "loaded"]


def models_table() -> pd.DataFrame:
    rows = [registry.describe(entry) for entry in registry.registry().values()]
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["parameters"] = table["parameters"].map(lambda n: f"{int(n):,}" if pd.notna(n) and n else "?")
    table["loaded"] = table["loaded"].map(lambda loaded: "yes" if loaded else "no")
    return table


def licence_notes() -> str:
    """The terms each listed model's weights come under (Gemma's notice, once it is provisioned), beside the table."""
    return "\n\n".join(f"**{entry.name}**: {entry.licence}" for entry in registry.registry().values() if entry.licence)


@shows_errors(outputs=3, at=1, blank={0: ""})
def run_generation(model_name: str, prompt: str, max_new_tokens: float):
    """Returns (reply, stats markdown, refreshed table)."""
    generate.check_prompt(prompt)
    loaded = loading.load(model_name)
    result = generate.generate(loaded, prompt, max_new_tokens)
    stats = (f"**{result.new_tokens} new tokens in {result.seconds:.2f} s: "
             f"{result.tokens_per_second:.1f} tokens/s** (greedy decoding, measured on {loaded.device}, "
             f"{str(loaded.dtype).replace('torch.', '')})")
    return result.completion or "(the model produced no text)", stats, models_table()


def create_models_tab() -> dict:
    gr.Markdown(
        "Runnable models: the bundled **SmolLM2-135M-Instruct** (real weights, shipped with the app), a tiny "
        "random model for fast tests, the base model **Gemma 3 270M** once `python -m explorer provision gemma-3-270m` "
        "has installed it, and any Hugging Face model folder with safetensors placed in `models_cache/`. "
        "Models load on first use, so the first answer takes a few seconds longer.")
    table = gr.Dataframe(value=models_table, label="Runnable models", interactive=False, elem_id="models-table",
                         wrap=True, column_widths=["17%", "15%", "11%", "7%", "9%", "9%", "24%", "8%"])
    licences = gr.Markdown(licence_notes, elem_id="models-licences")
    refresh = gr.Button("Refresh list", size="sm")
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(choices=model_choices(), value=provision.BUNDLED_NAME,
                                allow_custom_value=True, label="Model",
                                info="A name from the table, or the path of a model folder with safetensors",
                                elem_id="gen-model")
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="What is the capital of France?",
                                elem_id="gen-prompt")
            max_new = named_slider(1, 256, value=64, step=1, label="Max new tokens", elem_id="gen-max-new")
            button = gr.Button("Generate", variant="primary", elem_id="gen-button")
        with gr.Column(scale=3):
            reply = gr.Textbox(label="Reply", lines=6, interactive=False, elem_id="gen-reply")
            stats = gr.Markdown(elem_id="gen-stats")

    refresh.click(models_table, outputs=table, api_name="models_table")
    refresh.click(licence_notes, outputs=licences, api_visibility="private")
    inputs = [model, prompt, max_new]
    button.click(run_generation, inputs=inputs, outputs=[reply, stats, table], api_name="generate")
    prompt.submit(run_generation, inputs=inputs, outputs=[reply, stats, table], api_visibility="private")
    return {"table": table, "model": model, "prompt": prompt, "reply": reply, "stats": stats, "refresh": refresh}
