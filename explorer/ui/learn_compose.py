"""The Learn tab's composition experiment: combine two finished runs and measure interference.

Scores come from explorer.compare.compose (real greedy generations on both tasks' held-out sets). The demo
button says what it will train and how long that takes, asks for a confirmation, and then trains the missing
runs through the shared worker queue, so the web server never trains; they are ordinary runs, which the
Cancel button (or the Fine-tune tab) stops.
"""

from __future__ import annotations

import time
from html import escape

import gradio as gr
import pandas as pd

from ..compare import compose
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


def demo_plan() -> tuple[dict, dict]:
    """(runs found, configs to train) of the demo: a finished run with default options is reused."""
    found, missing = {}, {}
    for name, (method, dataset) in compose.DEMO_RUNS.items():
        run_id = compose.find_demo_run(compose.BUNDLED, method, dataset)
        if run_id:
            found[name] = run_id
        else:
            missing[name] = TrainConfig.parse({"model": compose.BUNDLED, "method": method, "dataset": dataset})
    return found, missing


@shows_errors(outputs=2)
def propose_demo():
    """What the demo would train and for how long (this machine's measured speed), before anything starts."""
    found, missing = demo_plan()
    if not missing:
        return "All demo runs exist already: press **Train the demo runs** to select them.", gr.Button(visible=True)
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
            f"\n\n{when}{reused} Press **Confirm: train them** to start, or leave it.", gr.Button(visible=True))


def train_demo():
    """Submit the missing demo runs to the worker queue and follow them until all are finished."""
    found, missing = demo_plan()
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
    first = list(compose.DEMO_RUNS)[:2]
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


@shows_errors(outputs=3, blank={1: pd.DataFrame(), 2: pd.DataFrame()})
def run_compose(a, b, how_value, wa, wb, n):
    if not a or not b:
        raise ExplorerError("Choose two runs (or train the demo runs first).")
    result = compose.compose(a, b, how_value, (wa, wb), examples=int(n))
    return escape(result["summary"]), scores_frame(result), outputs_frame(result)


def refresh_runs():
    choices = composable_runs()
    return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)


def create_compose_section() -> None:
    gr.Markdown("The chapter claims soft prompts compose more cleanly than LoRA adapters, which interfere. "
                "Pick two finished runs of one method on the same base model and different tasks; the "
                "combination is scored on both tasks' held-out sets.")
    with gr.Row():
        run_a = gr.Dropdown(composable_runs(), label="Run A", elem_id="compose-a")
        run_b = gr.Dropdown(composable_runs(), label="Run B", elem_id="compose-b")
        refresh = gr.Button("Refresh runs", scale=0)
    with gr.Row():
        how = gr.Dropdown(sorted({h for m in compose.COMPOSABLE.values() for h in m.combinations}), value="cat",
                          label="How to combine",
                          info="LoRA: PEFT's add_weighted_adapter (cat keeps both updates exactly; linear and ties "
                               "mix the factors). Prompt tuning: concat joins the two soft prompts.")
        weight_a = named_slider(-2, 2, value=1, step=0.1, label="weight of A")
        weight_b = named_slider(-2, 2, value=1, step=0.1, label="weight of B")
        examples = named_slider(1, 64, value=8, step=1, label="held-out examples per task")
    with gr.Row():
        go_button = gr.Button("Combine and score", variant="primary", elem_id="compose-go")
        demo = gr.Button("Train the demo runs (bundled model)", elem_id="compose-demo")
        confirm = gr.Button("Confirm: train them", variant="primary", visible=False, elem_id="compose-confirm")
        cancel = gr.Button("Cancel demo runs", variant="stop", elem_id="compose-cancel")
    demo_runs = gr.State({})
    summary = gr.Markdown(elem_id="compose-summary")
    scores = gr.Dataframe(pd.DataFrame(columns=["variant", "score on A's task", "score on B's task"]),
                          label="Task scores", interactive=False)
    outputs = gr.Dataframe(pd.DataFrame(columns=["dataset", "prompt", "A alone", "B alone", "combined"]),
                           label="Replies side by side", interactive=False, wrap=True, elem_id="compose-replies",
                           column_widths=["10%", "18%", "24%", "24%", "24%"])

    refresh.click(refresh_runs, None, [run_a, run_b], api_visibility="private")
    go_button.click(run_compose, [run_a, run_b, how, weight_a, weight_b, examples], [summary, scores, outputs],
                    api_visibility="private")
    demo.click(propose_demo, None, [summary, confirm], api_visibility="private")
    confirm.click(shows_errors(outputs=5)(train_demo), None, [summary, run_a, run_b, confirm, demo_runs],
                  api_visibility="private", concurrency_limit=None)
    cancel.click(cancel_demo, demo_runs, summary, api_visibility="private")
