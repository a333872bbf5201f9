"""Fine-tune tab: start a real short fine-tune in a worker process and watch it learn.

The page follows a run through its files (explorer.ui.run_view): closing the browser does not stop a
run, a reload or a second browser tab re-attaches by clicking the run's row, and a crashed worker never
takes the server down. Handlers are module functions (tests call them without a browser); the layout
and wiring are in ``create_finetune_tab``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import gradio as gr

from ..errors import ExplorerError
from ..human import human_bytes
from ..methods import DEFAULT_METHOD, METHODS
from ..models import provision, registry
from ..train import estimate, lifecycle, runs
from ..train.config import TrainConfig, check_dataset
from . import recipe_panel, run_view
from .common import Latest, error_message, jobs, shows_errors
from .dataset_picker import UPLOAD, dataset_choices, dataset_picker, dataset_value, describe_dataset, score_value
from .model_lists import model_choices
from .widgets import method_option_groups, options_of, show_only, widget_for

TRAIN_FIELDS = [f for f in dataclasses.fields(TrainConfig) if f.name not in ("model", "method", "dataset", "score")]
# Settings only chat training reads (explorer/train/loop.py); a classifier or embedding head run
# (explorer/train/heads.py) ignores them, so the tab hides them for labelled text and pairs.
CHAT_ONLY = ("grad_accum", "eval_examples", "eval_loss_examples", "max_new_tokens", "probe_examples")
POLL_SECONDS = 1.0
following = Latest()  # the run each browser session is watching: a newer pick ends the older live view


# --------------------------------------------------------------------------- starting


def parse_request(model_name, method_name, dataset_name, path, text, score_choice, pattern, keys, values,
                  save: bool) -> tuple[TrainConfig, dict]:
    """The run the widgets describe, checked (every value, hosting caps included); the upload saved only
    when ``save``. Raises ExplorerError naming the first bad value."""
    n = len(keys)
    if method_name not in METHODS:
        raise ExplorerError(f"Unknown method '{method_name}'. Methods: {', '.join(METHODS)}.")
    options = options_of(method_name, keys, values[:n])
    kind = METHODS[method_name].data_kind(METHODS[method_name].parse_options(options))
    dataset = dataset_value(dataset_name, path, text, save, kind)
    score = score_value(score_choice, pattern) if dataset_name == UPLOAD and kind == "chat" else ""
    config = TrainConfig.parse({"model": model_name, "method": method_name, "dataset": dataset, "score": score,
                                **{f.name: v for f, v in zip(TRAIN_FIELDS, values[n:])}})
    check_dataset(config, options)
    registry.resolve(model_name)
    return config, options


def estimate_text(config: TrainConfig, options: dict) -> str:
    guess = estimate.estimate(config, options)
    memory = f"**Before you start:** the Calculator predicts {human_bytes(guess.memory_bytes)} of training memory"
    if guess.total_seconds is None:
        return f"{memory}; time: {guess.basis}."
    other = f" plus about {guess.other_seconds:.0f} s of loading and scoring" if guess.other_seconds else ""
    return (f"{memory}; about {guess.train_seconds:.0f} s of training steps{other} ({guess.basis}; an estimate, "
            "not a promise: the first run of a model also loads it from disk).")


def preview_cost(model_name, method_name, dataset_name, path, text, score_choice, pattern, keys, *values) -> str:
    try:
        config, options = parse_request(model_name, method_name, dataset_name, path, text, score_choice, pattern,
                                        keys, values, save=False)
        return estimate_text(config, options)
    except Exception as error:  # noqa: BLE001 - the estimate says what is wrong with the settings instead
        return error_message(error) + " Nothing can start with these settings yet."


def start_run(model_name, method_name, dataset_name, path, text, score_choice, pattern, keys, values,
              request: gr.Request | None = None) -> tuple[str, str]:
    """Submit the run to the worker queue: (run id, progress line); nothing starts on bad input."""
    try:
        config, options = parse_request(model_name, method_name, dataset_name, path, text, score_choice, pattern,
                                        keys, values, save=True)
        run_dir = jobs().submit(config, options)
    except Exception as error:  # noqa: BLE001 - bad input: one message, no run
        following.set(request, "")
        return "", error_message(error) + " Nothing was started."
    following.set(request, run_dir.name)
    return run_dir.name, f"**Queued** run `{run_dir.name}`…"


# --------------------------------------------------------------------------- following a run


def view(run_id: str):
    """(progress, loss chart, metrics) of a run as it is now."""
    run = runs.read_run(runs.run_path(run_id))
    events = runs.read_log(run.folder)
    return (run_view.progress_text(run, events, jobs().position(run.folder)), run_view.run_figure(events),
            run_view.metrics_text(events)), run


def follow(run_id: str, request: gr.Request | None = None):
    """Stream a run's progress, loss chart and metrics until it finishes, or until this browser session
    picks another run. Whether the run is queued, training or long finished, this is what shows it."""
    if not run_id:
        return
    try:
        while True:
            shown, run = view(run_id)
            yield (*shown, run_view.runs_table() if run.finished else gr.skip())
            if run.finished or not following.is_current(request, run_id):
                return
            time.sleep(POLL_SECONDS)
    except ExplorerError as error:  # the run was deleted meanwhile
        yield error_message(error), gr.skip(), gr.skip(), run_view.runs_table()


def pick_row(table, evt: gr.SelectData, request: gr.Request | None = None):
    """A click on a row of the runs table selects that run: the live view attaches to it."""
    row = evt.row_value if evt.row_value else None
    if not row or not row[0]:
        return gr.skip(), gr.skip()
    following.set(request, row[0])
    return row[0], row[0]


def refresh_table(last: tuple):
    """The runs table, when anything in it changed since ``last`` (a timer polls this while the page is open)."""
    signature = run_view.table_signature()
    if signature == last:
        return gr.skip(), last
    return run_view.runs_table(), signature


# --------------------------------------------------------------------------- acting on the selected run


def require_run(run_id: str, action: str) -> Path:
    if not (run_id or "").strip():
        raise ExplorerError(f"No run to {action} yet: start one above, or pick one in the runs table.")
    return runs.run_path(run_id)


@shows_errors()
def stop_run(run_id: str) -> str:
    folder = require_run(run_id, "stop")
    state = runs.status(folder).get("state")
    if state not in ("queued", "running"):
        return f"Run `{run_id}` is {state}: there is nothing to stop."
    if jobs().position(folder) is not None:
        jobs().stop(folder)
    else:  # started elsewhere (the CLI, another server process): its trainer watches the same STOP file
        lifecycle.request_stop(folder)
    return ("**Stopping** after the current step; the adapter trained so far is saved (discard it below)."
            if state == "running" else f"**Cancelled** run `{run_id}` before it started.")


@shows_errors(outputs=3, at=1)
def discard_run(run_id: str):
    require_run(run_id, "discard")
    runs.delete_run(run_id)  # refuses queued and running runs: stop them first
    return "", f"Run `{run_id}` discarded.", run_view.runs_table()


@shows_errors(outputs=2, at=1)
def download_zip(run_id: str):
    require_run(run_id, "download")
    return str(runs.zip_adapter(run_id)), gr.skip()


def data_for_method(keys, method_name, dataset_name, current_kind, *option_values):
    """The dataset choices for the kind of data the method (with these options) trains on: a classifier head
    gets labelled text, an embedding head paraphrase pairs, every other method chat data. Nothing changes while
    the kind stays the same."""
    try:
        method = METHODS[method_name]
        kind = method.data_kind(method.parse_options(options_of(method_name, keys, option_values)))
    except (ExplorerError, KeyError):  # an option being typed: the cost line says what is wrong
        kind = current_kind
    if kind == current_kind:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    choices, value = dataset_choices(kind, dataset_name)
    text, group = describe_dataset(value, kind)
    return gr.Dropdown(choices=choices, value=value), kind, text, group


def method_changed(method_name: str, groups: dict):
    default = METHODS[method_name].default_lr
    return [*show_only(groups, method_name),
            gr.Number(info=f"0 = the default for {METHODS[method_name].title}: {default:g} (prompt, prefix "
                           "and IA³ need far higher rates than LoRA)")]


# --------------------------------------------------------------------------- layout and wiring


def create_finetune_tab() -> dict:
    jobs()  # marks runs a previous server left running as interrupted
    gr.Markdown("Run a short, real fine-tune on this machine and watch it learn. The defaults (bundled SmolLM2, "
                "LoRA, the pirate dataset, 20 steps) take about two minutes on a 2-core CPU. Click any run in "
                "the table below to follow it, stop it, discard it or compare it.")
    with gr.Row():
        model = gr.Dropdown(model_choices(), value=provision.BUNDLED_NAME, label="Model",
                            elem_id="ft-model", allow_custom_value=True)
        method = gr.Dropdown([(m.title, n) for n, m in METHODS.items()], value=DEFAULT_METHOD, label="Method",
                             elem_id="ft-method")
    picker = dataset_picker("ft")
    keys, option_widgets, groups = method_option_groups("ft", sliders=False)
    with gr.Accordion("Training settings", open=True):
        train_widgets, per_row = [], 5  # rows of five: at 1280 px every label and its help fit on its box
        for row_fields in (TRAIN_FIELDS[i:i + per_row] for i in range(0, len(TRAIN_FIELDS), per_row)):
            with gr.Row():
                train_widgets += [widget_for(f, f"ft-{f.name}", sliders=False) for f in row_fields]
    cost = gr.Markdown(elem_id="ft-estimate")
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
    gr.Markdown("### Runs\nClick a row to follow that run (queued, running or finished); Stop, Discard, Compare "
                "and Download act on it.")
    table = gr.Dataframe(value=run_view.runs_table, interactive=False, elem_id="ft-runs", wrap=True,
                         column_widths=["17%", "7%", "7%", "12%", "9%", "6%", "7%", "7%", "11%", "6%", "11%"])
    signature = gr.State(())
    timer = gr.Timer(2.0)
    with gr.Row():
        pick = gr.Textbox(label="Selected run", elem_id="ft-pick", interactive=False)
        download_button = gr.Button("Download adapter (.zip)")
        download = gr.File(label="Adapter", interactive=False)

    request_inputs = [model, method, *picker.inputs, *option_widgets, *train_widgets]
    n_fixed = 7
    recipe_panel.create(run_id, lambda *values: parse_request(*values[:n_fixed], keys, values[n_fixed:], save=True),
                        request_inputs)
    live = [progress, plot, metrics, table]

    def start_handler(request: gr.Request, *values):  # gradio passes the request to a leading parameter
        return start_run(*values[:n_fixed], keys, values[n_fixed:], request=request)

    def cost_handler(*values):
        return preview_cost(*values[:n_fixed], keys, *values[n_fixed:])

    gr.on([method.change, *[w.change for w in option_widgets]],
          lambda m, d, k, *v: data_for_method(keys, m, d, k, *v), [method, picker.dataset, picker.kind, *option_widgets],
          [picker.dataset, picker.kind, picker.info, picker.group], api_visibility="private", show_progress="hidden")
    chat_only = [train_widgets[[f.name for f in TRAIN_FIELDS].index(name)] for name in CHAT_ONLY]
    picker.kind.change(lambda k: [gr.update(visible=k == "chat")] * len(chat_only), picker.kind, chat_only,
                       api_visibility="private", show_progress="hidden")
    lr_widget = train_widgets[[f.name for f in TRAIN_FIELDS].index("learning_rate")]
    method.change(lambda m: method_changed(m, groups), method, [*groups.values(), lr_widget],
                  api_visibility="private")
    gr.on([c.change for c in request_inputs if hasattr(c, "change")], cost_handler, request_inputs, cost,
          trigger_mode="always_last", show_progress="hidden", api_visibility="private")
    start.click(start_handler, request_inputs, [run_id, progress], api_name="train").then(
        follow, run_id, live, api_visibility="private", concurrency_limit=None)
    table.select(pick_row, table, [run_id, pick], api_visibility="private").then(
        follow, run_id, live, api_visibility="private", concurrency_limit=None)
    run_id.change(lambda r: r, run_id, pick, api_visibility="private", queue=False)
    timer.tick(refresh_table, signature, [table, signature], api_visibility="private", show_progress="hidden",
               queue=False)
    stop.click(stop_run, run_id, progress, api_name="stop_training")
    discard.click(discard_run, run_id, [run_id, progress, table], api_visibility="private")
    download_button.click(download_zip, run_id, [download, progress], api_visibility="private")
    return {"table": table, "run_id": run_id, "to_compare": to_compare, "model": model, "progress": progress,
            "estimate": (cost_handler, request_inputs, cost)}
