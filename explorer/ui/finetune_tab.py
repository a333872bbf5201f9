"""Fine-tune tab: start a real short fine-tune in a worker process and watch it learn.

The page follows the run through its files (status.json, log.jsonl): closing the browser does not
stop a run, and a crashed worker never takes the server down.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from ..data import uploads as data
from ..models import registry as models, provision
from ..train import runs
from .. import settings
from ..errors import ExplorerError
from ..train.jobs import JobManager
from ..methods import METHODS
from ..data.tasks import TASKS
from ..train.loop import TrainConfig
from .calculator_view import human_bytes
from .common import error_message
from .model_lists import model_choices
from .widgets import method_option_groups, options_of, show_only, widget_for

UPLOAD = "__upload__"
TERMINAL = {"done", "stopped", "failed", "cancelled", "interrupted"}
TRAIN_FIELDS = [f for f in dataclasses.fields(TrainConfig) if f.name not in ("model", "method", "dataset")]
_jobs: JobManager | None = None


def jobs() -> JobManager:
    global _jobs
    if _jobs is None:
        _jobs = JobManager()
    return _jobs


def runs_table() -> pd.DataFrame:
    rows = []
    for run in runs.list_runs():
        config, summary = run["settings"].get("config", {}), run["summary"]

        def number(key, fmt="{:.3f}"):
            value = summary.get(key)
            return fmt.format(value) if isinstance(value, (int, float)) else ""

        rows.append([run["run_id"], run["status"].get("state", "?"), config.get("method", ""), config.get("model", ""),
                     Path(str(config.get("dataset", ""))).stem, summary.get("steps", ""),
                     number("train_loss_last"), number("eval_loss_last"),
                     f"{number('task_score_base', '{:.2f}')} → {number('task_score_adapted', '{:.2f}')}",
                     number("seconds", "{:.0f} s")])
    return pd.DataFrame(rows, columns=["run", "state", "method", "model", "dataset", "steps", "train loss",
                                       "held-out loss", "task score base → adapted", "time"])


def loss_figure(events: list[dict]) -> go.Figure:
    steps = [e for e in events if e.get("event") == "step"]
    evals = [e for e in events if "eval_loss" in e]
    fig = go.Figure()
    fig.add_scatter(x=[e["step"] for e in steps], y=[e["loss"] for e in steps], mode="lines", name="training loss")
    fig.add_scatter(x=[e["step"] for e in evals], y=[e["eval_loss"] for e in evals], mode="lines+markers",
                    name="held-out loss")
    fig.update_layout(xaxis_title="step", yaxis_title="loss", height=320, margin=dict(l=40, r=10, t=30, b=40),
                      title="Loss (live)")
    return fig


def progress_text(run_dir: Path, events: list[dict], position: int | None) -> str:
    state = runs.status(run_dir)
    name = state.get("state", "?")
    if name == "queued" and position:
        return f"**Queued:** position {position} (runs train in turn). Run `{run_dir.name}`."
    if name == "failed":
        return f"**Failed:** {state.get('error', 'unknown error')}"
    if name in ("interrupted", "cancelled"):
        return f"**{name.capitalize()}.** {state.get('error', '')}"
    start = next((e for e in events if e.get("event") == "start"), None)
    steps = [e for e in events if e.get("event") == "step"]
    if not start:
        return f"**Preparing** run `{run_dir.name}`: loading the model, scoring the base model on held-out examples…"
    total = start["steps"]
    done = steps[-1]["step"] if steps else 0
    filled = int(20 * done / max(total, 1))
    bar = "█" * filled + "░" * (20 - filled)
    eta = f", about {steps[-1]['eta']:.0f} s left" if steps and name == "running" else ""
    label = {"running": "Training", "done": "Finished", "stopped": "Stopped"}.get(name, name)
    after = " — scoring the adapted model…" if name == "running" and done == total else ""
    return f"**{label}** `{bar}` step {done}/{total}{eta}{after}  (run `{run_dir.name}`)"


def metrics_text(events: list[dict]) -> str:
    start = next((e for e in events if e.get("event") == "start"), {})
    steps = [e for e in events if e.get("event") == "step"]
    scores = {e["which"]: e["score"] for e in events if e.get("event") == "score"}
    data_event = next((e for e in events if e.get("event") == "data"), {})
    lines = []
    if data_event:
        lines.append(f"- data: {data_event['train_examples']} training and {data_event['heldout_examples']} held-out "
                     f"examples; {data_event['truncated']} truncated to the sequence length")
    if start:
        agree = "equal" if start["trainable_params"] == start["calculator_trainable_params"] else "differ"
        lines.append(f"- trainable parameters: measured {start['trainable_params']:,}; Calculator "
                     f"{start['calculator_trainable_params']:,} ({agree}); learning rate {start['learning_rate']:g} "
                     f"on {start['device']}")
    if steps:
        last = steps[-1]
        lines.append(f"- throughput: {last['tokens_per_second']:.0f} tokens/s")
        how = ("torch's peak allocated on the GPU" if start.get("device") == "cuda" else
               "the worker's peak resident memory: libraries and memory the allocator keeps after freeing "
               "included, see bench/memory_prediction.py")
        lines.append(f"- peak memory: measured {human_bytes(last['peak_memory_bytes'])} ({how}); Calculator "
                     f"predicts {human_bytes(start['predicted_peak_bytes'])} for weights, states and activations")
    if "base" in scores:
        adapted = f"{scores['adapted']:.2f}" if "adapted" in scores else "…"
        lines.append(f"- held-out task score: base {scores['base']:.2f} → adapted {adapted}")
    return "\n".join(lines)


def save_upload(path: str | None, pasted: str) -> tuple[str, data.ParsedData]:
    """Check the upload (or pasted rows) and keep a copy in models_cache/uploads/ for the worker."""
    if path:
        if Path(path).stat().st_size > data.MAX_UPLOAD_BYTES:
            raise ExplorerError(f"The file is larger than {data.MAX_UPLOAD_BYTES:,} bytes.")
        parsed = data.parse_upload(Path(path).read_bytes(), Path(path).name)
    elif (pasted or "").strip():
        parsed = data.parse_pasted(pasted)
    else:
        raise ExplorerError("Upload a JSONL or CSV file, or paste rows, or pick a bundled dataset.")
    # Valid rows only, as JSONL: the worker reads one format whatever was uploaded.
    content = "\n".join(json.dumps(row, ensure_ascii=False) for row in parsed.rows).encode("utf-8")
    folder = settings.models_cache() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{hashlib.sha256(content).hexdigest()[:16]}.jsonl"
    target.write_bytes(content)
    return str(target), parsed


def create_finetune_tab() -> dict:
    jobs()  # marks runs a previous server left running as interrupted
    gr.Markdown("Run a short, real fine-tune on this machine and watch it learn. The defaults (bundled SmolLM2, "
                "LoRA, the pirate dataset, 20 steps) take under two minutes on a 2-core CPU.")
    with gr.Row():
        model = gr.Dropdown(model_choices(), value=provision.BUNDLED_NAME, label="Model",
                            elem_id="ft-model", allow_custom_value=True)
        method = gr.Dropdown([(m.title, n) for n, m in METHODS.items()], value="lora", label="Method",
                             elem_id="ft-method")
        dataset = gr.Dropdown([(f"{t.title} ({n})", n) for n, t in TASKS.items()] + [("Upload or paste", UPLOAD)],
                              value="pirate", label="Dataset", elem_id="ft-dataset")
    task_info = gr.Markdown(TASKS["pirate"].description)
    with gr.Group(visible=False) as upload_group:
        upload = gr.File(label="JSONL (messages, or prompt/response) or CSV (prompt,response)",
                         file_types=[".jsonl", ".json", ".csv"], type="filepath")
        pasted = gr.Textbox(label="…or paste rows", lines=4, placeholder='{"prompt": "Hi", "response": "Hello!"}')
        check = gr.Button("Check data", size="sm")
        preview = gr.Dataframe(label="Preview", interactive=False, wrap=True)
        problems = gr.Dataframe(label="Rows that will be skipped", interactive=False, wrap=True)
    keys, option_widgets, groups = method_option_groups("ft")
    with gr.Accordion("Training settings", open=True):
        train_widgets, half = [], (len(TRAIN_FIELDS) + 1) // 2
        for row_fields in (TRAIN_FIELDS[:half], TRAIN_FIELDS[half:]):  # two even rows: no label gets squeezed
            with gr.Row():
                train_widgets += [widget_for(f, f"ft-{f.name}") for f in row_fields]
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="ft-start")
        stop = gr.Button("Stop", variant="stop", elem_id="ft-stop")
        discard = gr.Button("Discard this run", elem_id="ft-discard")
        to_compare = gr.Button("Compare this run", elem_id="ft-compare")
    progress = gr.Markdown(elem_id="ft-progress")
    run_id = gr.State("")
    with gr.Row():
        plot = gr.Plot(label="Loss", elem_id="ft-plot")
        metrics = gr.Markdown(elem_id="ft-metrics")
    gr.Markdown("### Runs")
    table = gr.Dataframe(value=runs_table, interactive=False, elem_id="ft-runs", wrap=True)
    with gr.Row():
        pick = gr.Textbox(label="Run id to download", elem_id="ft-pick")
        download_button = gr.Button("Download adapter (.zip)")
        download = gr.File(label="Adapter", interactive=False)

    def describe_dataset(name):
        text = TASKS[name].description + f" Score: {TASKS[name].score_name}." if name in TASKS else \
            "Upload or paste rows; invalid rows are listed with their line numbers."
        return text, gr.Group(visible=(name == UPLOAD))

    def check_data(path, text):
        try:
            _, parsed = save_upload(path, text)
            n = len(parsed.rows)
            return (data.preview_table(parsed), data.errors_table(parsed),
                    f"{n:,} valid row{'' if n == 1 else 's'}; training holds some out, so it needs at least 2.")
        except Exception as error:
            return gr.skip(), gr.skip(), error_message(error)

    def start_run(model_name, method_name, dataset_name, path, text, *values):
        n = len(keys)
        try:
            if dataset_name != UPLOAD and dataset_name not in TASKS:  # the API could name any file otherwise
                raise ExplorerError(f"Unknown dataset '{dataset_name}': choose one of {', '.join(TASKS)}, "
                                    "or upload or paste rows.")
            dataset_value = save_upload(path, text)[0] if dataset_name == UPLOAD else dataset_name
            config = TrainConfig.parse({"model": model_name, "method": method_name, "dataset": dataset_value,
                                        **{f.name: v for f, v in zip(TRAIN_FIELDS, values[n:])}})
            options = options_of(method_name, keys, values[:n])
            METHODS[method_name].parse_options(options)
            models.resolve(model_name)
            run_dir = jobs().submit(config, options)
        except Exception as error:
            yield "", error_message(error), gr.skip(), gr.skip(), gr.skip()
            return
        while True:
            events = runs.read_log(run_dir)
            state = runs.status(run_dir).get("state")
            yield (run_dir.name, progress_text(run_dir, events, jobs().position(run_dir)), loss_figure(events),
                   metrics_text(events), runs_table() if state in TERMINAL else gr.skip())
            if state in TERMINAL:
                return
            time.sleep(1.0)

    def require_run(run_id, action: str) -> str:
        if not (run_id or "").strip():
            raise ExplorerError(f"No run to {action} yet: start one above, or pick one in the runs table.")
        return run_id

    def stop_run(current):
        try:
            require_run(current, "stop")
            jobs().stop(runs.run_path(current))
            return "**Stopping** after the current step; the adapter trained so far is saved (discard it below)."
        except Exception as error:
            return error_message(error)

    def discard_run(current):
        try:
            require_run(current, "discard")
            if jobs().position(runs.run_path(current)) is not None:
                raise ExplorerError("This run is still training; stop it first.")
            runs.delete_run(current)
            return "", "Run discarded.", runs_table()
        except Exception as error:
            return current, error_message(error), runs_table()

    def download_zip(chosen):
        try:
            return str(runs.zip_adapter(require_run(chosen, "download"))), gr.skip()
        except Exception as error:
            return None, error_message(error)

    lr_widget = train_widgets[[f.name for f in TRAIN_FIELDS].index("learning_rate")]

    def on_method(method_name):
        default = METHODS[method_name].default_lr
        return [*show_only(groups, method_name),
                gr.Number(info=f"0 = the default for {METHODS[method_name].title}: {default:g} (prompt, prefix "
                               "and IA³ need far higher rates than LoRA)")]

    method.change(on_method, method, [*groups.values(), lr_widget], api_visibility="private")
    dataset.change(describe_dataset, dataset, [task_info, upload_group], api_visibility="private")
    check.click(check_data, [upload, pasted], [preview, problems, task_info], api_visibility="private")
    start.click(start_run, [model, method, dataset, upload, pasted, *option_widgets, *train_widgets],
                [run_id, progress, plot, metrics, table], api_name="train")
    stop.click(stop_run, run_id, progress, api_name="stop_training")
    discard.click(discard_run, run_id, [run_id, progress, table], api_visibility="private")
    download_button.click(download_zip, pick, [download, progress], api_visibility="private")
    def pick_row(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.skip()

    table.select(pick_row, None, pick, api_visibility="private")
    return {"table": table, "run_id": run_id, "to_compare": to_compare, "model": model}
