"""The Fine-tune tab's "Export recipe" panel: a run (or the settings on the page, before training) as a zip that
trains it again on the user's own GPUs with transformers + PEFT + accelerate (explorer.recipes)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import gradio as gr

from .. import recipes, settings
from ..recipes.strategy import TITLES
from .common import shows_errors

STRATEGY_CHOICES = [("the cheapest that fits (Calculator)", "auto"), ("DDP", "ddp"), ("FSDP", "fsdp"),
                    ("DeepSpeed ZeRO-3", "zero3")]


def _target(name: str) -> Path:
    folder = settings.models_cache() / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-", dir=folder)) / f"recipe-{name}"


def _options(gpus, memory, strategy) -> dict:
    return {"gpus": int(gpus or 1), "gpu_memory_gb": float(memory or 80),
            "strategy": None if strategy in (None, "", "auto") else strategy}


def _done(folder: Path) -> tuple[str, str]:
    meta = recipes.read_meta(folder)
    archive = recipes.zip_folder(folder)
    return str(archive), (f"**Recipe ready:** {TITLES[meta['strategy']]} on {meta['gpus']} GPU(s). Unzip it, then "
                          "`bash launch.sh` (its README has the commands; `CPU_ONLY=1 NPROC=2 bash launch.sh` tries it "
                          "without a GPU). Bring the result back with `python -m explorer import-run FOLDER`.")


@shows_errors(outputs=2, at=1)
def recipe_of_run(run_id: str, gpus, memory, strategy):
    if not (run_id or "").strip():
        return gr.skip(), "**Error:** pick a finished run in the runs table first (or export these settings)."
    return _done(recipes.export_run(run_id, _target(run_id), **_options(gpus, memory, strategy)))


@shows_errors(outputs=2, at=1)
def recipe_of_settings(parse, gpus, memory, strategy, *values):
    config, options = parse(*values)
    return _done(recipes.export(config, options, _target(config.method), **_options(gpus, memory, strategy)))


def create(run_id, parse, request_inputs: set) -> None:
    """``parse(values) -> (TrainConfig, options)``: the Fine-tune tab's checked request, from gradio's
    {component: value} dict of ``request_inputs`` (a set of components)."""
    with gr.Accordion("Run it on your own GPUs: export a recipe", open=False):
        gr.Markdown("A zip with `train.py` (transformers + PEFT), the data as JSONL, accelerate configs for one GPU, "
                    "DDP, FSDP and DeepSpeed ZeRO-3, and `launch.sh`: the same model, method options, data "
                    "formatting, learning rate, steps, batch and seed, with the standard tools instead of this app. "
                    "The configuration is chosen by the Calculator's memory per GPU for your GPUs.")
        with gr.Row():
            gpus = gr.Number(1, label="GPUs", precision=0, minimum=1, maximum=1024, elem_id="recipe-gpus")
            memory = gr.Number(80, label="Memory per GPU (GiB)", minimum=1, elem_id="recipe-memory")
            strategy = gr.Dropdown(STRATEGY_CHOICES, value="auto", label="Configuration", elem_id="recipe-strategy")
        with gr.Row():
            of_run = gr.Button("Recipe of the selected run", elem_id="recipe-run")
            of_settings = gr.Button("Recipe of these settings (before training)", elem_id="recipe-settings")
        note = gr.Markdown(elem_id="recipe-note")
        archive = gr.File(label="Recipe", interactive=False)
    choice = [gpus, memory, strategy]
    of_run.click(recipe_of_run, [run_id, *choice], [archive, note], api_name="export_recipe")
    of_settings.click(lambda data: recipe_of_settings(parse, data[gpus], data[memory], data[strategy], data),
                      {*choice, *request_inputs},
                      [archive, note], api_visibility="private")
