"""The Learn tab's composition experiment: combine two finished runs and measure interference.

Scores come from explorer.compose (real greedy generations on both tasks' held-out sets). The one-click
demo trains the missing runs through the Fine-tune tab's worker queue, so the web server never trains.
"""

from __future__ import annotations

import time
from html import escape

import gradio as gr
import pandas as pd

from ..compare import compose
from ..train import runs, loop as training
from ..errors import ExplorerError
from .common import error_message
from .widgets import named_slider

POLL_SECONDS = 2.0


def composable_runs() -> list[tuple[str, str]]:
    choices = []
    for run in runs.list_runs():
        config = run["settings"].get("config", {})
        if run["status"].get("state") == "done" and run["has_adapter"] and config.get("method") in compose.HOWS:
            label = (f"{run['run_id']} · {config.get('method')} · {config.get('model')} · "
                     f"{str(config.get('dataset')).rsplit('/', 1)[-1]}")
            choices.append((label, run["run_id"]))
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


def create_compose_section() -> None:
    gr.Markdown("The chapter claims soft prompts compose more cleanly than LoRA adapters, which interfere. "
                "Pick two finished runs on the same base model and different tasks (both LoRA or both prompt "
                "tuning); the combination is scored on both tasks' held-out sets.")
    with gr.Row():
        run_a = gr.Dropdown(composable_runs(), label="Run A", elem_id="compose-a")
        run_b = gr.Dropdown(composable_runs(), label="Run B", elem_id="compose-b")
        refresh = gr.Button("Refresh runs", scale=0)
    with gr.Row():
        how = gr.Dropdown(["cat", "linear", "ties", "concat"], value="cat", label="How to combine",
                          info="LoRA: PEFT's add_weighted_adapter (cat keeps both updates exactly; linear and ties "
                               "mix the factors). Prompt tuning: concat joins the two soft prompts.")
        weight_a = named_slider(-2, 2, value=1, step=0.1, label="weight of A")
        weight_b = named_slider(-2, 2, value=1, step=0.1, label="weight of B")
        examples = named_slider(1, 64, value=8, step=1, label="held-out examples per task")
    with gr.Row():
        go_button = gr.Button("Combine and score", variant="primary", elem_id="compose-go")
        demo = gr.Button("Train the four demo runs (bundled model)", elem_id="compose-demo")
    summary = gr.Markdown(elem_id="compose-summary")
    scores = gr.Dataframe(pd.DataFrame(columns=["variant", "score on A's task", "score on B's task"]),
                          label="Task scores", interactive=False)
    outputs = gr.Dataframe(pd.DataFrame(columns=["dataset", "prompt", "A alone", "B alone", "combined"]),
                           label="Replies side by side", interactive=False, wrap=True, elem_id="compose-replies",
                           column_widths=["10%", "18%", "24%", "24%", "24%"])

    def refresh_runs():
        choices = composable_runs()
        return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)

    def run_compose(a, b, how_value, wa, wb, n):
        try:
            if not a or not b:
                raise ExplorerError("Choose two runs (or train the four demo runs first).")
            result = compose.compose(a, b, how_value, (wa, wb), examples=int(n))
            return escape(result["summary"]), scores_frame(result), outputs_frame(result)
        except Exception as error:
            return error_message(error), pd.DataFrame(), pd.DataFrame()

    def train_demo():
        """Submit the missing demo runs to the worker queue and follow them until all are done."""
        from .finetune_tab import jobs

        try:
            wanted = {}
            for name, (method, dataset) in compose.DEMO_RUNS.items():
                found = compose.find_demo_run(compose.BUNDLED, method, dataset)
                if found:
                    wanted[name] = found
                    continue
                config = training.TrainConfig.parse({"model": compose.BUNDLED, "method": method, "dataset": dataset})
                wanted[name] = jobs().submit(config, {}).name
        except Exception as error:
            yield error_message(error), gr.skip(), gr.skip()
            return
        while True:
            states = {n: runs.status(runs.runs_dir() / r).get("state") for n, r in wanted.items()}
            text = demo_status(wanted)
            if all(s in ("done", "failed", "stopped", "cancelled", "interrupted") for s in states.values()):
                break
            yield f"**Training the demo runs** (one at a time, about two minutes each):\n{text}", gr.skip(), gr.skip()
            time.sleep(POLL_SECONDS)
        choices = composable_runs()
        ok = all(s == "done" for s in states.values())
        head = ("**Demo runs ready.** Runs A and B are set to the two LoRA runs; choose the prompt-tuning pair to "
                "compare." if ok else "**Some demo runs did not finish:**")
        yield (f"{head}\n{text}", gr.Dropdown(choices=choices, value=wanted["lora-pirate"]),
               gr.Dropdown(choices=choices, value=wanted["lora-french"]))

    refresh.click(refresh_runs, None, [run_a, run_b], api_visibility="private")
    go_button.click(run_compose, [run_a, run_b, how, weight_a, weight_b, examples], [summary, scores, outputs],
                    api_visibility="private")
    demo.click(train_demo, None, [summary, run_a, run_b], api_visibility="private")
