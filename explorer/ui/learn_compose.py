"""The Learn tab's composition experiment: combine two finished runs and measure interference.

Scores come from explorer.compare.compose (real greedy generations on both tasks' held-out sets); every
experiment of a session joins a table side by side (LoRA combinations, concatenated soft prompts, concatenated
prefixes) under a reading of measured against claimed (explorer.compare.compose_report). The demo button
says what it will train (the methods a learner ticks) and how long that takes, asks for a confirmation, and
then trains the missing runs through the shared worker queue, so the web server never trains; they are
ordinary runs, which the Cancel button (or the Fine-tune tab) stops.
"""

from __future__ import annotations

import time
from html import escape

import gradio as gr
import pandas as pd

from ..compare import compose, compose_report
from ..errors import ExplorerError
from ..train import estimate, lifecycle, runs
from ..train.config import TrainConfig
from .common import jobs, shows_errors
from .widgets import named_slider

POLL_SECONDS = 2.0


def composable_runs() -> list[tuple[str, str]]:
    choices = []
    for run in runs.list_runs():
        if run.state == "done" and run.has_adapter and run.method is not None and run.method.combinations:
            label = f"{run.run_id} · {run.config.method} · {run.config.model} · {run.dataset_label}"
            choices.append((label, run.run_id))
    return choices


def scores_frame(result: dict) -> pd.DataFrame:
    names = {"A": f"A alone ({result['datasets'][0]})", "B": f"B alone ({result['datasets'][1]})",
             "combined": f"combined ({result['how']})"}
    unique = list(dict.fromkeys(result["datasets"]))
    rows = [[names[v]] + [("—" if result["scores"][v][d] is None else f"{result['scores'][v][d]:.2f}")
                          for d in unique] for v in compose.VARIANTS]
    rows.append(["combined − own adapter"] + [("—" if result["interference"][d] is None else
                                               f"{result['interference'][d]:+.2f}") for d in unique])
    return pd.DataFrame(rows, columns=["variant"] + [f"score on {d} held-out" for d in unique])


def outputs_frame(result: dict) -> pd.DataFrame:
    rows = [[o["dataset"], o["prompt"], o["replies"]["A"], o["replies"]["B"], o["replies"]["combined"]]
            for o in result["outputs"]]
    return pd.DataFrame(rows, columns=["dataset", "prompt", "A alone", "B alone", "combined"])


def demo_status(names_to_runs: dict) -> str:
    lines = []
    for name, run_id in names_to_runs.items():
        if run_id is None:
            lines.append(f"- {name}: waiting")
            continue
        folder = runs.runs_dir() / run_id
        state = runs.status(folder).get("state", "?")
        steps = [e for e in runs.read_log(folder) if e.get("event") == "step"]
        done = f", step {steps[-1]['step']}" if steps and state == "running" else ""
        lines.append(f"- {name}: {state}{done} (`{run_id}`)")
    return "\n".join(lines)


def demo_plan(methods=None) -> tuple[dict, dict]:
    """(runs found, configs to train) of the demo: a finished run with default options is reused."""
    found, missing = {}, {}
    for name, (method, dataset) in compose.demo_runs(methods).items():
        run_id = compose.find_demo_run(compose.BUNDLED, method, dataset)
        if run_id:
            found[name] = run_id
        else:
            missing[name] = TrainConfig.parse({"model": compose.BUNDLED, "method": method, "dataset": dataset})
    return found, missing


@shows_errors(outputs=2)
def propose_demo(methods=None):
    """What the demo would train and for how long (this machine's measured speed), before anything starts."""
    found, missing = demo_plan(methods)
    if not missing:
        return "All demo runs exist already: press **Confirm: train them** to select them.", gr.Button(visible=True)
    lines, total = [], 0.0
    for name, config in missing.items():
        guess = estimate.estimate(config, {})
        seconds = guess.total_seconds
        total += seconds or 0
        lines.append(f"- {name}: {config.steps} steps of {config.method} on {config.dataset}"
                     + (f", about {seconds / 60:.1f} min" if seconds else ""))
    when = (f"About **{total / 60:.0f} minutes** in all, one run after another ({guess.basis})."
            if total else f"No time estimate: {guess.basis}.")
    reused = f" {len(found)} finished demo run(s) will be reused." if found else ""
    return (f"**The demo trains {len(missing)} run(s) on the bundled model:**\n" + "\n".join(lines) +
            f"\n\n{when}{reused} Untick methods to train fewer. Press **Confirm: train them** to start, or leave "
            "it.", gr.Button(visible=True))


def train_demo(methods=None):
    """Submit the missing demo runs to the worker queue and follow them until all are finished."""
    found, missing = demo_plan(methods)
    wanted = dict(found)
    for name, config in missing.items():
        wanted[name] = jobs().submit(config, {}).name
    yield gr.skip(), gr.skip(), gr.skip(), gr.Button(visible=False), wanted
    while True:
        states = {n: runs.status(runs.runs_dir() / r).get("state") for n, r in wanted.items()}
        text = demo_status(wanted)
        if all(state in runs.FINISHED for state in states.values()):
            break
        yield (f"**Training the demo runs** (one at a time; Cancel stops them):\n{text}", gr.skip(), gr.skip(),
               gr.skip(), gr.skip())
        time.sleep(POLL_SECONDS)
    choices = composable_runs()
    ok = all(state == "done" for state in states.values())
    first = list(wanted)[:2]
    head = ("**Demo runs ready.** Runs A and B are set to the first pair; choose another pair to compare."
            if ok else "**Some demo runs did not finish:**")
    yield (f"{head}\n{text}", gr.Dropdown(choices=choices, value=wanted[first[0]] if ok else None),
           gr.Dropdown(choices=choices, value=wanted[first[1]] if ok else None), gr.skip(), {})


@shows_errors()
def cancel_demo(wanted: dict) -> str:
    stopped = []
    for name, run_id in (wanted or {}).items():
        folder = runs.runs_dir() / run_id
        if runs.status(folder).get("state") in ("queued", "running"):
            if jobs().position(folder) is not None:
                jobs().stop(folder)
            else:
                lifecycle.request_stop(folder)
            stopped.append(name)
    return (f"**Stopping** the demo runs {', '.join(stopped)}." if stopped else
            "No demo run is queued or training.")


def side_by_side_frame(rows: list[dict]) -> pd.DataFrame:
    datasets = list(dict.fromkeys(d for r in rows for d in r["datasets"]))
    table = []
    for r in rows:
        how = r["how"] + (f" (density {r['density']:g})" if r["density"] is not None else "")
        cells = [("—" if r["combined"].get(d) is None else
                  f"{r['combined'][d]:.2f} ({r['interference'][d]:+.2f})" if r["interference"].get(d) is not None
                  else f"{r['combined'][d]:.2f}") if d in r["combined"] else "" for d in datasets]
        table.append([r["title"], how, ", ".join(f"{w:g}" for w in r["weights"])] + cells)
    return pd.DataFrame(table, columns=["method", "combination", "weights"] +
                        [f"{d}: combined (− own)" for d in datasets])


@shows_errors(outputs=5, blank={1: pd.DataFrame(), 2: pd.DataFrame()})
def run_compose(a, b, how_value, wa, wb, n, density, history):
    if not a or not b:
        raise ExplorerError("Choose two runs (or train the demo runs first).")
    result = compose.compose(a, b, how_value, (wa, wb), examples=int(n),
                             density=float(density) if how_value in compose.DENSITY_TYPES else None)
    history = compose_report.add(list(history or []), result)
    return (escape(result["summary"]), scores_frame(result), outputs_frame(result), side_by_side_frame(history),
            history)


def refresh_runs():
    choices = composable_runs()
    return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)


HOW_LABELS = {"cat": "cat: both updates exactly (rank r_A + r_B)", "linear": "linear: mix the factors (cross terms)",
              "ties": "ties: prune, elect signs, average", "svd": "svd: exact sum, best rank-r approximation",
              "dare_linear": "dare_linear: drop at random, rescale, sum", "dare_ties": "dare_ties: DARE then TIES",
              "magnitude_prune": "magnitude_prune: keep the largest, sum",
              "concat": "concat: soft prompts joined [P_A ; P_B]",
              "kv_concat": "kv_concat: prefixes joined, n_A + n_B keys and values per layer"}


def create_compose_section() -> None:
    gr.Markdown("The textbook section claims prefixes and soft prompts compose more cleanly than LoRA adapters, which "
                "interfere. Pick two finished runs of one method on the same base model and different tasks; the "
                "combination is scored on both tasks' held-out sets, and each experiment joins the table below.")
    with gr.Row():
        run_a = gr.Dropdown(composable_runs(), label="Run A", elem_id="compose-a")
        run_b = gr.Dropdown(composable_runs(), label="Run B", elem_id="compose-b")
        refresh = gr.Button("Refresh runs", scale=0, elem_id="compose-refresh")
    ways = [h for m in compose.COMPOSABLE.values() for h in m.combinations]
    with gr.Row():
        how = gr.Dropdown([(HOW_LABELS.get(h, h), h) for h in ways], value="cat", label="How to combine",
                          elem_id="compose-how",
                          info="LoRA runs: PEFT's add_weighted_adapter types. Prompt tuning: concat. Prefix tuning: "
                               "kv_concat, the textbook section's 'prepend persona 1 prefix + persona 2 prefix'.")
        weight_a = named_slider(-2, 2, value=1, step=0.1, label="weight of A")
        weight_b = named_slider(-2, 2, value=1, step=0.1, label="weight of B")
        density = named_slider(0.05, 1, value=compose.DEFAULT_DENSITY, step=0.05, label="density",
                               elem_id="compose-density",
                               info="Share of entries ties, dare_* and magnitude_prune keep (the others ignore it).")
        examples = named_slider(1, 64, value=8, step=1, label="held-out examples per task")
    with gr.Row():
        go_button = gr.Button("Combine and score", variant="primary", elem_id="compose-go")
        demo_methods = gr.CheckboxGroup([(m.title, n) for n, m in compose.COMPOSABLE.items()],
                                        value=list(compose.COMPOSABLE), label="Demo runs to train",
                                        elem_id="compose-demo-methods", scale=2)
        demo = gr.Button("Train the demo runs (bundled model)", elem_id="compose-demo")
        confirm = gr.Button("Confirm: train them", variant="primary", visible=False, elem_id="compose-confirm")
        cancel = gr.Button("Cancel demo runs", variant="stop", elem_id="compose-cancel")
    demo_runs = gr.State({})
    history = gr.State([])
    summary = gr.Markdown(elem_id="compose-summary")
    scores = gr.Dataframe(pd.DataFrame(columns=["variant", "score on A's task", "score on B's task"]),
                          label="Task scores", interactive=False)
    outputs = gr.Dataframe(pd.DataFrame(columns=["dataset", "prompt", "A alone", "B alone", "combined"]),
                           label="Replies side by side", interactive=False, wrap=True, elem_id="compose-replies",
                           column_widths=["10%", "18%", "24%", "24%", "24%"])
    table = gr.Dataframe(pd.DataFrame(columns=["method", "combination", "weights"]), interactive=False, wrap=True,
                         label="Every combination measured in this session (score of the combination, and minus "
                               "its task's own adapter)", elem_id="compose-table")
    verdict = gr.Markdown(compose_report.reading([]), elem_id="compose-reading")

    refresh.click(refresh_runs, None, [run_a, run_b], api_visibility="private")
    go_button.click(run_compose, [run_a, run_b, how, weight_a, weight_b, examples, density, history],
                    [summary, scores, outputs, table, history], api_visibility="private").then(
        shows_errors()(compose_report.reading), history, verdict, api_visibility="private")
    demo.click(propose_demo, demo_methods, [summary, confirm], api_visibility="private")
    confirm.click(shows_errors(outputs=5)(train_demo), demo_methods, [summary, run_a, run_b, confirm, demo_runs],
                  api_visibility="private", concurrency_limit=None)
    cancel.click(cancel_demo, demo_runs, summary, api_visibility="private")
