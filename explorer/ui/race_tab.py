"""Race tab: every method on the same data and budget, live, then the tradeoff on one Pareto chart.

The race runs as one job of the shared worker queue (explorer.race.worker), never in the web server; this
page follows it through its files, so a reload or a second browser re-attaches by picking the race.
"""

from __future__ import annotations

import dataclasses
import html
import sys
import tempfile
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from ..data.tasks import TASKS
from ..errors import ExplorerError
from ..human import human_bytes, human_number
from ..models import provision
from ..race import charts, entrants, published, reading, report, results, verdicts
from ..race.races import RaceSettings, create_race, list_races, read_race, to_train
from ..race.estimate import estimate_race
from ..race.runner import request_stop
from ..train import runs
from .common import Latest, api_errors, error_message, jobs, shows_errors
from .dataset_picker import UPLOAD, dataset_picker, dataset_value, score_value
from .model_lists import model_choices
from .widgets import widget_for

POLL_SECONDS = 2.0
SETTING_FIELDS = [f for f in dataclasses.fields(RaceSettings) if f.name not in ("model", "dataset", "score", "steps")]
TABLE_COLUMNS = ["entrant", "verdict", "trainable parameters (measured · Calculator)",
                 "process peak memory (measured · predicted, ratio)", "tokens per second", "training seconds",
                 "held-out loss (base → after)", "task score (base → after)", "forgetting probe (base → after)",
                 "saved", "inference overhead, FLOPs per token", "Pareto front"]
# Each column as wide as its header's longest word in the table's bold monospace (~9.5 px a character at the
# page's 1215 px; headers wrap between words, never inside one): "forgetting", "training", "Pareto".
COLUMN_WIDTHS = ["9.5%", "10%", "10%", "11%", "6%", "8%", "9%", "7%", "9.5%", "5%", "9%", "6%"]
MARKS = {"learned": "●", "did_not_learn": "✕", "lost_general_knowledge": "▼", "diverged": "★", "failed": "■"}
MEMORY_NOTE = ("*Process peak memory:* measured is the training process's peak resident memory (Python, torch and "
               "the data included); predicted is the Calculator's count of what training holds (weights, gradients, "
               "optimizer state, activations) plus the process's runtime baseline measured as training starts "
               "(on a GPU: torch's peak allocated, no baseline). The ratio is measured ÷ predicted: above 1, the "
               "process needed more than predicted.")
watching = Latest()  # the race each browser session follows


def race_choices(races=None) -> list[tuple[str, str]]:
    return [(f"{r.race_id} · {r.settings.model} · {runs.dataset_label(r.settings.dataset)} · "
             f"{len(r.entrants)} entrants", r.race_id) for r in (list_races() if races is None else races)]


def newest_race(races) -> str | None:
    """The race a page shows when it opens: the newest finished one (what a reload or a second tab should show
    a class); with none finished, the newest one (a race still running, to follow)."""
    finished = [r for r in races if r.finished]
    chosen = (finished or races or [None])[0]
    return chosen.race_id if chosen else None


def load_races(current: str | None = None, request: gr.Request | None = None):
    """The saved races, read now (on page load and on Refresh): the current one kept if it still exists,
    else the newest (explorer.ui.race_tab.newest_race)."""
    try:
        races = list_races()
    except ExplorerError:  # e.g. the races folder cannot be created: an empty list, the page still works
        return gr.Dropdown(choices=[], value=None)
    ids = [r.race_id for r in races]
    chosen = current if current in ids else newest_race(races)
    if chosen:
        watching.set(request, chosen)
    return gr.Dropdown(choices=race_choices(races), value=chosen)


def parse_race(model, dataset_name, path, text, score_choice, pattern, columns, steps, specs, values, save: bool):
    """The race the widgets describe; ``columns``: the upload's column mapping picked (empty: recognised)."""
    dataset = dataset_value(dataset_name, path, text, save, columns=columns or "")
    race_settings = RaceSettings.parse({"model": model, "dataset": dataset,
                                        "score": score_value(score_choice, pattern) if dataset_name == UPLOAD else "",
                                        "steps": steps,
                                        **{f.name: v for f, v in zip(SETTING_FIELDS, values)}})
    chosen = entrants.parse_specs(specs)  # every spec checked before anything is created
    for entrant in chosen[:1]:
        race_settings.train_config(entrant)  # the hosting caps and the score
    return race_settings, chosen


def preview(model, dataset_name, path, text, score_choice, pattern, columns, steps, specs, *values) -> str:
    """What the race will cost before it starts: entrants, memory of the hungriest, and the time."""
    try:
        race_settings, chosen = parse_race(model, dataset_name, path, text, score_choice, pattern, columns, steps,
                                           specs, values, save=False)
        return estimate_race(race_settings, chosen).line(race_settings.steps)
    except Exception as error:  # noqa: BLE001 - the preview says what is wrong instead
        return error_message(error) + " The race cannot start with these settings yet."


def start_race(request: gr.Request, model, dataset_name, path, text, score_choice, pattern, columns, steps, specs,
               *values):
    try:
        race_settings, chosen = parse_race(model, dataset_name, path, text, score_choice, pattern, columns, steps,
                                           specs, values, save=True)
        race = create_race(race_settings, chosen)
        command = [sys.executable, "-m", "explorer.race.worker", str(race.folder)]
        jobs().submit_job(to_train(race), command, name=race.race_id, log_dir=race.folder)
    except Exception as error:  # noqa: BLE001 - bad input: one message, no race
        return gr.skip(), error_message(error) + " Nothing was started."
    watching.set(request, race.race_id)
    reused = sum(e["reused"] for e in race.entrants)
    note = f" ({reused} finished with identical settings before: reused, not retrained)" if reused else ""
    return gr.Dropdown(choices=race_choices(), value=race.race_id), f"**Queued** race `{race.race_id}`{note}…"


def progress_text(race) -> str:
    states = race.states()
    done = sum(s == "done" for s in states)
    failed = [e["name"] for e, s in zip(race.entrants, states) if s == "failed"]
    running = [e["name"] for e, s in zip(race.entrants, states) if s == "running"]
    head = f"Race `{race.race_id}`: {done} of {len(states)} entrants finished"
    if running:
        head += f"; training **{html.escape(running[0])}**"
    elif not race.finished and not race.base:
        head += "; scoring the base model once for all entrants"
    elif race.finished:
        head += " — the race is over" if done else " — stopped"
    if failed:
        head += f"; failed: {html.escape(', '.join(failed))} (see the table)"
    return head + "."


def verdict_cell(row: dict) -> str:
    if row["verdict"] is None:
        return row["verdict_reason"]
    words = f"{MARKS[row['verdict']]} {verdicts.WORDS[row['verdict']]}"
    return f"{words}: {row['error']}" if row["verdict"] == "failed" and row["error"] else words


def table_frame(table: list[dict]) -> pd.DataFrame:
    def pair(a, b, fmt="{:.2f}"):
        return f"{fmt.format(a)} → {fmt.format(b)}" if isinstance(a, float) and isinstance(b, float) else ""

    rows = []
    for r in table:
        count = (f"{r['trainable_params']:,} · {r['calculator_trainable_params']:,}"
                 if isinstance(r["trainable_params"], int) and isinstance(r["calculator_trainable_params"], int) else "")
        memory = (f"{human_bytes(r['peak_memory_bytes'])} · {human_bytes(r['predicted_peak_bytes'])} "
                  f"(×{r['memory_ratio']:.2f})" if r["memory_ratio"] else "")
        over = r["inference_overhead_flops_per_token"]
        overhead = ("nothing to merge (a new model)" if r["new_model"] else "" if over is None else
                    f"{human_number(over)} ({'once merged' if r['mergeable'] else 'cannot merge'})")
        name = r["name"] + ("" if r["kept"] else f" (lr {r['learning_rate']:g}, not kept)")
        rows.append([name, verdict_cell(r), count, memory,
                     f"{r['tokens_per_second']:.0f}" if r["tokens_per_second"] else "",
                     f"{r['train_seconds']:.0f}" if r["train_seconds"] else "",
                     pair(r["heldout_loss_first"], r["heldout_loss_last"], "{:.3f}"),
                     pair(r["task_score_base"], r["task_score_adapted"]), pair(r["probe_score_base"], r["probe_score"]),
                     human_bytes(r["saved_bytes"]) if r["saved_bytes"] else "", overhead, "★" if r["pareto"] else ""])
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def snapshot(race_id: str, training_loss: bool, cost: str, quality: str):
    race = read_race(race_id)
    table = results.rows(race)
    finished = race.finished
    if finished:
        found = reading.reading(table, quality, cost, questions=race.settings.eval_examples)
        verdict, details = reading.verdict_markdown(found), reading.details_markdown(found)
    else:
        verdict, details = "*The verdict appears when the race is over.*", ""
    return (progress_text(race), escape_markdown(verdict), charts.live_figure(race, training_loss, table),
            table_frame(table), charts.pareto_figure(table, cost, quality), escape_markdown(details)), finished


def escape_markdown(text: str) -> str:
    """Entrant names and errors come from users: shown as text, the markdown of the reading kept."""
    return html.escape(text).replace("&quot;", '"').replace("&#x27;", "'")


def follow(race_id: str, training_loss: bool, cost: str, quality: str, request: gr.Request | None = None):
    """Stream the race (progress, live chart, table, Pareto chart, reading) until it ends or another is picked."""
    if not race_id:
        return
    try:
        while True:
            shown, finished = snapshot(race_id, training_loss, cost, quality)
            yield shown
            if finished or not watching.is_current(request, race_id):
                return
            time.sleep(POLL_SECONDS)
    except Exception as error:  # noqa: BLE001 - e.g. the race folder was removed meanwhile
        yield error_message(error), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()


@shows_errors(outputs=6)
def redraw(race_id: str, training_loss: bool, cost: str, quality: str):
    """The charts again after a picker changed (no polling: follow() does that while a race runs)."""
    return snapshot(race_id, training_loss, cost, quality)[0] if race_id else tuple(gr.skip() for _ in range(6))


def pick_race(race_id: str, request: gr.Request | None = None) -> str:
    watching.set(request, race_id)
    return race_id


@shows_errors()
def stop_race(race_id: str) -> str:
    if not race_id:
        raise ExplorerError("No race to stop: start one, or pick one from the list.")
    race = read_race(race_id)
    if race.finished:
        return f"Race `{race_id}` is over: nothing to stop."
    for folder in race.run_folders():
        if runs.status(folder).get("state") in ("queued", "running") and jobs().position(folder) is not None:
            jobs().stop(folder)
    request_stop(race)
    return "**Stopping** the race: the entrant training now stops after its current step; finished entrants stay."


@shows_errors(outputs=2, at=1, blank={0: None})
def export(race_id: str, kind: str):
    if not race_id:
        raise ExplorerError("Pick a race first.")
    race = read_race(race_id)
    folder = Path(tempfile.mkdtemp(prefix="race-export-"))
    if kind == "csv":
        path = folder / f"{race_id}.csv"
        path.write_text(results.to_csv(race), encoding="utf-8")
    else:
        path = folder / f"{race_id}.html"
        path.write_text(report.to_html(race), encoding="utf-8")
    return str(path), f"Exported `{path.name}`."


@api_errors
def race_api(model: str, dataset: str, entrant_specs: str, steps: int = 20, settings_json: str = "{}",
             wait_seconds: float = 1800) -> dict:
    """A race as an API: queued through the worker like the page's, then its results as JSON once it is over
    (the schema of ``python -m explorer race --json``). Bundled datasets only (no paths through the API)."""
    import json

    if dataset not in TASKS:
        raise ExplorerError(f"Unknown dataset '{dataset}': the API takes a bundled dataset ({', '.join(TASKS)}).")
    extra = json.loads(settings_json or "{}")
    if not isinstance(extra, dict):
        raise ExplorerError("settings must be a JSON object of race settings.")
    race_settings = RaceSettings.parse({"model": model, "dataset": dataset, "steps": steps, **extra})
    chosen = entrants.parse_specs(entrant_specs)
    race_settings.train_config(chosen[0])  # the hosting caps
    race = create_race(race_settings, chosen)
    jobs().submit_job(to_train(race), [sys.executable, "-m", "explorer.race.worker", str(race.folder)],
                      name=race.race_id, log_dir=race.folder)
    deadline = time.time() + float(wait_seconds)
    while not read_race(race.race_id).finished:
        if time.time() > deadline:
            raise ExplorerError(f"Race {race.race_id} is still running after {wait_seconds:g} s; pick it in the "
                                "Race tab to follow it.")
        time.sleep(POLL_SECONDS)
    return results.as_json(read_race(race.race_id))


def entrant_run(race_id: str, evt: gr.SelectData) -> str:
    """The run of the entrant whose row was clicked (empty if it has no adapter to compare)."""
    if not race_id or not evt.index:
        return ""
    row = results.rows(read_race(race_id))[evt.index[0]]
    return row["run_id"] if runs.read_run(runs.runs_dir() / row["run_id"]).has_adapter else ""


def create_race_tab() -> dict:
    gr.Markdown(
        "**Which method buys how much quality for what cost, on your data?** Every entrant fine-tunes the same "
        "model on the same rows in the same order (one seed) for the same number of optimizer steps, each at "
        "its own method's default learning rate (prompt, prefix and IA³ need far higher rates than LoRA; a "
        "small per-entrant rate sweep is one tick away, since a race at one shared rate measures the rate, not "
        "the method). The base model is scored once; each entrant is scored on the same held-out rows and on a "
        "forgetting probe of general questions. Click an entrant's row to open its run in Compare.")
    with gr.Row():
        model = gr.Dropdown(model_choices(), value=provision.BUNDLED_NAME, label="Model", elem_id="race-model",
                            allow_custom_value=True)
        steps = gr.Number(20, label="steps (the budget, the same for every entrant)", precision=0,
                          elem_id="race-steps")
    picker = dataset_picker("race")
    specs = gr.Textbox(entrants.default_specs(), label="Entrants", lines=2, elem_id="race-entrants",
                       info="Comma-separated methods with options (PEFT's names): lora, lora:r=1, "
                            "lora:r=64:lora_alpha=128, ia3, prompt:num_virtual_tokens=10. The default is every "
                            "method plus a LoRA rank sweep (r = 1, 2, 4, 8, 16, 64); add the others by "
                            f"name: {', '.join(entrants.other_methods())}; or write all: every method at its "
                            "defaults (the estimate below says how long).")
    with gr.Accordion("Race settings (the same for every entrant)", open=False):
        setting_widgets, half = [], (len(SETTING_FIELDS) + 1) // 2
        for row_fields in (SETTING_FIELDS[:half], SETTING_FIELDS[half:]):  # two rows: no label is squeezed
            with gr.Row():
                setting_widgets += [widget_for(f, f"race-{f.name}", sliders=False) for f in row_fields]
    cost_line = gr.Markdown(elem_id="race-estimate")
    with gr.Row():
        start = gr.Button("Start the race", variant="primary", elem_id="race-start")
        stop = gr.Button("Stop", variant="stop", elem_id="race-stop")
        # Read when the page loads and on Refresh (below), never only when the app was built.
        race = gr.Dropdown([], label="Saved races (newest first)", elem_id="race-pick", scale=3)
        refresh = gr.Button("Refresh list", size="sm", scale=1, elem_id="race-refresh")
    progress = gr.Markdown(elem_id="race-progress")
    verdict = gr.Markdown(elem_id="race-verdict")
    show_training = gr.Checkbox(False, label="also show training loss (dotted)")
    live = gr.Plot(elem_id="race-live")
    gr.Markdown(charts.LEGEND_KEY, elem_id="race-legend-key")
    table = gr.Dataframe(pd.DataFrame(columns=TABLE_COLUMNS), interactive=False, wrap=True, elem_id="race-table",
                         label="Entrants (★ = on the Pareto front of held-out loss against trainable parameters; "
                               "click a row to open that run in Compare)", column_widths=COLUMN_WIDTHS)
    gr.Markdown(MEMORY_NOTE, elem_id="race-memory-note")
    with gr.Row():
        cost = gr.Dropdown([(v, k) for k, v in results.COSTS.items()], value="trainable_params", label="cost axis",
                           elem_id="race-cost")
        quality = gr.Dropdown([(v[0], k) for k, v in results.QUALITIES.items()], value="heldout_loss_last",
                              label="quality axis", elem_id="race-quality")
    front = gr.Plot(elem_id="race-pareto")
    read = gr.Markdown(elem_id="race-reading")
    with gr.Accordion("Published results at scale (for reference: not measured here)", open=False):
        gr.Markdown(published.caption())
        gr.Dataframe(published.table(), interactive=False, wrap=True, elem_id="race-published")
    with gr.Row():
        csv_button = gr.Button("Export CSV", size="sm")
        html_button = gr.Button("Export HTML report", size="sm")
        exported = gr.File(label="Export", interactive=False)
    opened = gr.Textbox(visible=False, elem_id="race-open-run")

    inputs = [model, *picker.inputs, picker.columns, steps, specs, *setting_widgets]
    shown = [progress, verdict, live, table, front, read]
    gr.on([c.change for c in inputs], preview, inputs, cost_line, trigger_mode="always_last",
          show_progress="hidden", api_visibility="private")
    start.click(start_race, inputs, [race, progress], api_visibility="private").then(
        follow, [race, show_training, cost, quality], shown, api_visibility="private", concurrency_limit=None)
    race.select(pick_race, race, race, api_visibility="private").then(
        follow, [race, show_training, cost, quality], shown, api_visibility="private", concurrency_limit=None)
    for control in (show_training, cost, quality):
        control.change(redraw, [race, show_training, cost, quality], shown, api_visibility="private")
    following = [race, show_training, cost, quality]
    gr.on(None, load_races, None, race, api_visibility="private", show_progress="hidden").then(  # page load
        follow, following, shown, api_visibility="private", concurrency_limit=None)
    refresh.click(load_races, race, race, api_visibility="private").then(
        follow, following, shown, api_visibility="private", concurrency_limit=None)
    stop.click(stop_race, race, progress, api_visibility="private")
    csv_button.click(lambda r: export(r, "csv"), race, [exported, progress], api_visibility="private")
    html_button.click(lambda r: export(r, "html"), race, [exported, progress], api_visibility="private")
    table.select(entrant_run, race, opened, api_visibility="private")
    gr.api(race_api, api_name="race")
    return {"opened": opened, "preview": (preview, inputs, cost_line), "model": model}
