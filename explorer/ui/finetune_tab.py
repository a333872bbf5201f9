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

from ..data import sources
from ..errors import ExplorerError
from ..human import human_bytes
from ..learn import recommend
from ..methods import DEFAULT_METHOD, METHODS
from ..methods import get as get_method
from ..models import provision, registry
from ..train import estimate, lifecycle, runs
from ..train.config import TrainConfig, check_dataset
from . import recipe_panel, run_view, take_home, timeline_view
from .common import Latest, error_message, jobs, shows_errors
from .dataset_picker import (UPLOAD, dataset_choices, dataset_picker, dataset_value, describe_dataset, length_text,
                             read_upload, score_value)
from .model_lists import model_choices
from .method_options import MethodOptions, option_defaults
from .widgets import option_key, widget_for

TRAIN_FIELDS = [f for f in dataclasses.fields(TrainConfig) if f.name not in ("model", "method", "dataset", "score")]
# The first screen holds what a newcomer needs (data, method, steps, Start); every other setting is one click
# away under "Advanced".
FIRST_SCREEN = ("steps",)
# Settings only chat training reads (explorer/train/loop.py); a classifier or embedding head run
# (explorer/train/heads.py) ignores them, so the tab hides them for labelled text and pairs.
CHAT_ONLY = ("grad_accum", "eval_examples", "eval_loss_examples", "max_new_tokens", "probe_examples",
             "watch_every", "watch_prompts")
POLL_SECONDS = 1.0
following = Latest()  # the run each browser session is watching: a newer pick ends the older live view
# The method each browser session picked by hand: a recommendation then says its pick but leaves the method (one
# computed for an earlier model or data change could otherwise arrive after the pick and undo it).
picked_by_hand = Latest()


def form_values(model: str = "", method: str = DEFAULT_METHOD, dataset: str = "pirate", **values) -> dict:
    """What the tab's widgets send, by name, with every unnamed widget at its default: the API and tests build
    requests with it (e.g. ``form_values(TINY, "lora", **{"lora.r": 4, "steps": 3})``)."""
    form = {"model": model, "method": method, "dataset": dataset, "upload": None, "pasted": "", "score": "",
            "pattern": "", "columns": ""}
    form.update(option_defaults())
    form.update({f.name: f.default for f in TRAIN_FIELDS})
    form.update(values)
    return form


def options_in(form: dict, method_name: str) -> dict:
    return {f.name: form[option_key(method_name, f.name)] for f in dataclasses.fields(METHODS[method_name].options_type)
            if option_key(method_name, f.name) in form}


# --------------------------------------------------------------------------- starting


def parse_request(form: dict, save: bool) -> tuple[TrainConfig, dict]:
    """The run the widgets describe (``form``: their values by name, see ``form_values``), checked (every
    value, hosting caps included); the upload saved only when ``save``. Raises ExplorerError naming the first
    bad value."""
    method_name = form["method"]
    get_method(method_name)  # an unknown name, or one not offered, said in one line
    options = options_in(form, method_name)
    kind = METHODS[method_name].data_kind(METHODS[method_name].parse_options(options))
    dataset = dataset_value(form["dataset"], form["upload"], form["pasted"], save, kind, form.get("columns", ""))
    score = score_value(form["score"], form["pattern"]) if form["dataset"] == UPLOAD and kind == "chat" else ""
    config = TrainConfig.parse({"model": form["model"], "method": method_name, "dataset": dataset, "score": score,
                                **{f.name: form[f.name] for f in TRAIN_FIELDS if f.name in form}})
    check_dataset(config, options)
    registry.resolve(form["model"])
    return config, options


def estimate_text(config: TrainConfig, options: dict) -> str:
    guess = estimate.estimate(config, options)
    memory = f"**Before you start:** the Calculator predicts {human_bytes(guess.memory_bytes)} of training memory"
    if guess.total_seconds is None:
        return f"{memory}; time: {guess.basis}."
    other = f" plus about {guess.other_seconds:.0f} s of loading and scoring" if guess.other_seconds else ""
    return (f"{memory}; about {guess.train_seconds:.0f} s of training steps{other} ({guess.basis}; an estimate, "
            "not a promise: the first run of a model also loads it from disk).")


def preview_cost(form: dict) -> str:
    try:
        config, options = parse_request(form, save=False)
        return " ".join(filter(None, [estimate_text(config, options), length_text(config)]))
    except Exception as error:  # noqa: BLE001 - the estimate says what is wrong with the settings instead
        return error_message(error) + " Nothing can start with these settings yet."


def start_run(form: dict, request: gr.Request | None = None) -> tuple[str, str]:
    """Submit the run to the worker queue: (run id, progress line); nothing starts on bad input."""
    try:
        config, options = parse_request(form, save=True)
        run_dir = jobs().submit(config, options)
    except Exception as error:  # noqa: BLE001 - bad input: one message, no run
        following.set(request, "")
        return "", error_message(error) + " Nothing was started."
    following.set(request, run_dir.name)
    return run_dir.name, f"**Queued** run `{run_dir.name}`…"


# --------------------------------------------------------------------------- following a run


def view(run_id: str):
    """(progress, loss chart, metrics, watch-it-learn timeline) of a run as it is now, and the run."""
    run = runs.read_run(runs.run_path(run_id))
    events = runs.read_log(run.folder)
    return (run_view.progress_text(run, events, jobs().position(run.folder)), run_view.run_figure(events),
            run_view.metrics_text(events), timeline_view.timeline_html(events, finished=run.finished)), run


def follow(run_id: str, request: gr.Request | None = None):
    """Stream a run's progress, loss chart, metrics and timeline until it finishes, or until this browser
    session picks another run. Whether the run is queued, training or long finished, this is what shows it."""
    if not run_id:
        return
    try:
        while True:
            shown, run = view(run_id)
            progress, figure, metrics, timeline = shown
            yield progress, figure, metrics, run_view.runs_table() if run.finished else gr.skip(), timeline
            if run.finished or not following.is_current(request, run_id):
                return
            time.sleep(POLL_SECONDS)
    except ExplorerError as error:  # the run was deleted meanwhile
        yield error_message(error), gr.skip(), gr.skip(), run_view.runs_table(), gr.skip()


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


def kind_for_method(form: dict, current_kind: str) -> str:
    """The kind of data the method (with these options) trains on: a classifier head labelled text, an embedding
    head paraphrase pairs, every other method chat data (the current kind while an option is being typed: the
    cost line says what is wrong)."""
    try:
        method = METHODS[form["method"]]
        return method.data_kind(method.parse_options(options_in(form, form["method"])))
    except (ExplorerError, KeyError):
        return current_kind


def data_for_kind(kind: str, dataset: str):
    """The dataset choices for a new kind of data, the pick among them and its description.

    Runs only when the kind state changes (a state's change event fires only on a new value): an update sent to
    the dataset dropdown, even an empty one, makes the browser fire its change event, which re-read the upload
    and asked for a recommendation again, in a loop that could undo a column just picked."""
    choices, value = dataset_choices(kind, dataset)
    return gr.Dropdown(choices=choices, value=value), describe_dataset(value, kind)


def remember_pick(method_name: str, request: gr.Request) -> None:
    picked_by_hand.set(request, method_name)


def method_changed(method_name: str):
    default = METHODS[method_name].default_lr
    return gr.Number(info=f"0 = the default for {METHODS[method_name].title}: {default:g} (prompt, prefix and IA³ "
                          "need far higher rates than LoRA)")


def rows_in(form: dict, kind: str) -> int | None:
    """How many rows the chosen data has (None while an upload is missing or unreadable: its own line says why)."""
    try:
        if form["dataset"] != UPLOAD:
            train, heldout = sources.load_dataset(form["dataset"])
            return len(train) + len(heldout)
        return len(read_upload(form["upload"], form["pasted"], kind, form.get("columns", "")).rows)
    except Exception:  # noqa: BLE001 - the data's own check says what is wrong with it
        return None


def recommendation(form: dict, kind: str) -> tuple[str | None, dict, str]:
    """(method, its options, a sentence): the decision helper's pick for a short fine-tune of this model on this
    data (explorer.learn.recommend.for_data), or (None, {}, why not) when the data cannot be read yet."""
    rows = rows_in(form, kind)
    if rows is None:
        return None, {}, ""
    try:
        pick = recommend.for_data(form["model"], kind, rows, recommend.this_machine_gb())
    except ExplorerError as error:
        return None, {}, f"No recommendation: {error}"
    settings = ", ".join(f"{k}={v}" for k, v in pick.options.items() if k in ("r", "head_type", "num_virtual_tokens"))
    return pick.method, pick.options, (
        f"**Recommended for {rows:,} rows of {KIND_WORDS.get(kind, kind)}: {pick.title}**"
        + (f" ({settings})" if settings else "") + f". {pick.reasons[0]} Any other method can be picked instead.")


KIND_WORDS = {"chat": "chat data", "labelled": "labelled text", "pairs": "text pairs"}


# --------------------------------------------------------------------------- layout and wiring
def create_finetune_tab() -> dict:
    jobs()  # marks runs a previous server left running as interrupted
    gr.Markdown("### Fine-tune a model on your data\n"
                "**1.** Pick a bundled dataset, or upload your own (a spreadsheet saved as CSV or Excel, JSONL, "
                "JSON or Parquet). **2.** Keep the recommended method or pick another. **3.** Press Start and watch "
                "it learn. The defaults (bundled SmolLM2, LoRA, the pirate dataset, 20 steps) take about two "
                "minutes on a 2-core CPU; afterwards the page says what the model learned, what it did not and "
                "what it forgot, and offers it as a file to run on your own computer.")
    picker = dataset_picker("ft")
    with gr.Row():
        method = gr.Dropdown([(m.title, n) for n, m in METHODS.items()], value=DEFAULT_METHOD, label="Method",
                             elem_id="ft-method", scale=2)
        steps_field = next(f for f in TRAIN_FIELDS if f.name == "steps")
        steps = widget_for(steps_field, "ft-steps", sliders=False)
        model = gr.Dropdown(model_choices(), value=provision.BUNDLED_NAME, label="Model",
                            elem_id="ft-model", allow_custom_value=True, scale=2)
    advice = gr.Markdown(elem_id="ft-recommendation")
    cost = gr.Markdown(elem_id="ft-estimate")
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="ft-start")
        stop = gr.Button("Stop", variant="stop", elem_id="ft-stop")
    progress = gr.Markdown(elem_id="ft-progress")
    run_id = gr.State("")
    timeline = timeline_view.create_timeline()
    with gr.Row():
        plot = gr.Plot(label="Loss", elem_id="ft-plot")
        metrics = gr.Markdown(elem_id="ft-metrics")
    with gr.Accordion("Advanced: every method option and training setting", open=False, elem_id="ft-advanced"):
        options = MethodOptions("ft", method, sliders=False)
        train_widgets = {"steps": steps}
        rest = [f for f in TRAIN_FIELDS if f.name not in FIRST_SCREEN]
        per_row = 5  # rows of five: at 1280 px every label and its help fit on its box
        for row_fields in (rest[i:i + per_row] for i in range(0, len(rest), per_row)):
            with gr.Row():
                train_widgets.update({f.name: widget_for(f, f"ft-{f.name}", sliders=False) for f in row_fields})
    gr.Markdown("### Runs\nClick a row to follow that run (queued, running or finished); the buttons below act "
                "on it.")
    table = gr.Dataframe(value=run_view.runs_table, interactive=False, elem_id="ft-runs", wrap=True,
                         column_widths=["17%", "7%", "7%", "12%", "9%", "6%", "7%", "7%", "11%", "6%", "11%"])
    signature = gr.State(())
    timer = gr.Timer(2.0)
    with gr.Row():
        pick = gr.Textbox(label="Selected run", elem_id="ft-pick", interactive=False)
        discard = gr.Button("Discard this run", elem_id="ft-discard")
        to_compare = gr.Button("Compare this run", elem_id="ft-compare")
    home = take_home.create_take_home(run_id)

    widgets = {"model": model, "method": method, **dict(zip(("dataset", "upload", "pasted", "score", "pattern"),
                                                            picker.inputs)),
               "columns": picker.columns, **train_widgets}
    inputs = set(widgets.values()) | {options.values}

    def read(data: dict) -> dict:
        """The form by name (gradio passes a set of inputs as one {component: value} dict): the widgets' values
        and every method's options."""
        return {**data[options.values], **{name: data[widget] for name, widget in widgets.items()}}

    recipe_panel.create(run_id, lambda data: parse_request(read(data), save=True), inputs)
    live = [progress, plot, metrics, table, timeline]

    def start_handler(data: dict, request: gr.Request):
        return start_run(read(data), request=request)

    def recommend_handler(data: dict, request: gr.Request):
        method_name, recommended, sentence = recommendation(read(data), data[picker.kind])
        updates = {advice: sentence}
        values = {**data[options.values], **{option_key(method_name, k): v for k, v in recommended.items()}}
        if method_name and picked_by_hand.get(request) is None and (method_name, values) != (data[method],
                                                                                           data[options.values]):
            updates[method] = method_name
            updates[options.values] = values
            updates[options.requested] = (method_name, (data[options.requested] or (None, 0))[1] + 1)  # shown
        return updates

    gr.on([method.change, options.values.change], lambda data: kind_for_method(read(data), data[picker.kind]),
          inputs | {picker.kind}, picker.kind, api_visibility="private", show_progress="hidden")
    picker.kind.change(data_for_kind, [picker.kind, picker.dataset], [picker.dataset, picker.info],
                       api_visibility="private", show_progress="hidden")
    gr.on([picker.dataset.change, picker.upload.change, picker.columns.change, model.change], recommend_handler,
          inputs | {picker.kind, options.requested}, [advice, method, options.values, options.requested],
          api_visibility="private",
          show_progress="hidden", trigger_mode="always_last")
    chat_only = [train_widgets[name] for name in CHAT_ONLY]
    picker.kind.change(lambda k: [gr.update(visible=k == "chat")] * len(chat_only), picker.kind, chat_only,
                       api_visibility="private", show_progress="hidden")
    method.change(method_changed, method, train_widgets["learning_rate"], api_visibility="private")
    method.input(remember_pick, method, None, api_visibility="private", queue=False)
    gr.on([*(c.change for c in widgets.values() if hasattr(c, "change")), options.values.change],
          lambda data: preview_cost(read(data)),
          inputs, cost, trigger_mode="always_last", show_progress="hidden", api_visibility="private")
    # When the live view ends (the run finished), the take-home panel says what it can now build.
    start.click(start_handler, inputs, [run_id, progress], api_name="train").then(
        follow, run_id, live, api_visibility="private", concurrency_limit=None).then(
        take_home.describe, run_id, home["about"], api_visibility="private", show_progress="hidden")
    table.select(pick_row, table, [run_id, pick], api_visibility="private").then(
        follow, run_id, live, api_visibility="private", concurrency_limit=None).then(
        take_home.describe, run_id, home["about"], api_visibility="private", show_progress="hidden")
    run_id.change(lambda r: r, run_id, pick, api_visibility="private", queue=False)
    timer.tick(refresh_table, signature, [table, signature], api_visibility="private", show_progress="hidden",
               queue=False)
    stop.click(stop_run, run_id, progress, api_name="stop_training")
    discard.click(discard_run, run_id, [run_id, progress, table], api_visibility="private")
    return {"table": table, "run_id": run_id, "to_compare": to_compare, "model": model, "progress": progress,
            "estimate": (lambda data: preview_cost(read(data)), inputs, cost),
            # on page load only the sentence: the defaults already are the pick for the bundled data, and setting
            # the method and its options again would fire every option widget's change events on each load
            "recommend": (lambda data: recommendation(read(data), data[picker.kind])[2], inputs | {picker.kind},
                          advice)}
