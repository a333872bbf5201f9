"""The Learn tab's learned mixtures (LoRAHub at small scale): the weights of a LoRA mixture searched on a few
example rows of a target task, the search's loss drawn live, then the mixture against each adapter alone
and the uniform mixture on held-out rows.

The search (explorer.compare.mixture) runs in a thread of the web server (inference only, no gradients, as
Compare's measurements do); this handler streams its progress from a queue.
"""

from __future__ import annotations

import queue
import threading
from html import escape

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from ..compare import mixture
from ..data.tasks import TASKS
from ..errors import ExplorerError
from ..train import runs
from .common import error_message, shows_errors
from .widgets import named_slider


def mixable_runs() -> list[tuple[str, str]]:
    """Finished runs whose method combines with 'cat' (LoRA), labelled with their task."""
    return [(f"{run.run_id} · {run.config.method} · {run.config.model} · {run.dataset_label}", run.run_id)
            for run in runs.list_runs()
            if run.state == "done" and run.has_adapter and run.method is not None and "cat" in run.method.combinations]


def progress_figure(history: list[dict], uniform: float | None = None) -> go.Figure:
    fig = go.Figure()
    x = [e["iteration"] for e in history]
    fig.add_scatter(x=x, y=[e["best_loss"] for e in history], mode="lines+markers", name="best mixture so far")
    fig.add_scatter(x=x, y=[e["mean_loss"] for e in history], mode="lines+markers", name="mean of the generation",
                    line=dict(dash="dot"))
    if uniform is not None:
        fig.add_hline(y=uniform, line_dash="dash", line_color="#9e9e9e", annotation_text="uniform mixture")
    fig.update_layout(height=320, margin=dict(l=50, r=10, t=40, b=40), title="Loss on the example rows per CMA-ES "
                      "generation", xaxis_title="generation", yaxis_title="loss")
    return fig


def weights_frame(result: dict) -> pd.DataFrame:
    labels = dict(zip(result["runs"], result["datasets"]))
    return pd.DataFrame([[run_id, labels[run_id], f"{w:+.3f}"] for run_id, w in result["weights"].items()],
                        columns=["run", "trained on", "weight found"])


def evaluation_frame(result: dict) -> pd.DataFrame:
    labels = dict(zip(result["runs"], result["datasets"]))
    rows = []
    for name, row in result["evaluation"].items():
        label = f"{name} alone ({labels[name]})" if name in labels else name
        rows.append([label, f"{row['few_shot_loss']:.4f}", f"{row['heldout_loss']:.4f}",
                     "—" if row["task_score"] is None else f"{row['task_score']:.2f}"])
    return pd.DataFrame(rows, columns=["variant", "loss on the examples", "held-out loss", "held-out task score"])


def learn(run_ids, target, shots, iterations, heldout):
    """Stream (summary, progress chart, weights, evaluation) while the search runs, then the result."""
    if not run_ids:
        raise ExplorerError("Choose two or more finished LoRA runs on one base model.")
    if not target:
        raise ExplorerError("Choose the target task.")
    events: queue.Queue = queue.Queue()
    outcome = {}

    def work():
        try:
            outcome["result"] = mixture.learn_weights(run_ids, target, shots=int(shots), iterations=int(iterations),
                                                      heldout_examples=int(heldout), on_iteration=events.put)
        except Exception as error:  # noqa: BLE001 - shown on the page by the handler
            outcome["error"] = error
        events.put(None)

    threading.Thread(target=work, daemon=True).start()
    history = []
    yield ("**Searching…** (loading the adapters, then one forward pass over the examples per mixture tried)",
           gr.Plot(visible=False), gr.skip(), gr.skip())
    while (event := events.get()) is not None:
        history.append(event)
        yield (f"**Searching…** generation {event['iteration']} of at most {int(iterations)}: best loss "
               f"{event['best_loss']:.4f}", gr.Plot(progress_figure(history), visible=True), gr.skip(), gr.skip())
    if "error" in outcome:
        yield error_message(outcome["error"]), gr.skip(), pd.DataFrame(), pd.DataFrame()
        return
    result = outcome["result"]
    yield (escape(result["summary"]), gr.Plot(progress_figure(result["history"],
                                                              result["few_shot_loss"]["uniform mixture"]), visible=True),
           weights_frame(result), evaluation_frame(result))


def create_mixture_section() -> None:
    gr.Markdown("The textbook section names LoRAHub's learned mixtures as another way to compose. Pick several finished "
                "LoRA runs on one base and a target task: a gradient-free search (CMA-ES, no gradients through the "
                "base) finds the weights of PEFT's add_weighted_adapter mixture that lower the loss on a few of the "
                "target's example rows; then the mixture meets each adapter alone and the uniform mixture on "
                "held-out rows.")
    with gr.Row():
        chosen = gr.Dropdown(mixable_runs(), multiselect=True, label="LoRA runs to mix", elem_id="mixture-runs",
                             scale=4)
        refresh = gr.Button("Refresh runs", scale=0, elem_id="mixture-refresh")
    with gr.Row():
        target = gr.Dropdown([(f"{t.title} ({n})", n) for n, t in TASKS.items()], value="french",
                             label="Target task (its first training rows are the examples)", elem_id="mixture-target")
        shots = named_slider(1, 32, value=8, step=1, label="example rows to learn from", elem_id="mixture-shots")
        iterations = named_slider(1, 30, value=8, step=1, label="CMA-ES generations", elem_id="mixture-iterations")
        heldout = named_slider(1, 64, value=8, step=1, label="held-out rows to score")
    go_button = gr.Button("Learn the weights", variant="primary", elem_id="mixture-go")
    summary = gr.Markdown(elem_id="mixture-summary")
    chart = gr.Plot(visible=False, elem_id="mixture-progress")
    weights = gr.Dataframe(pd.DataFrame(columns=["run", "trained on", "weight found"]), interactive=False,
                           label="Weights found", elem_id="mixture-weights")
    evaluation = gr.Dataframe(pd.DataFrame(columns=["variant", "loss on the examples", "held-out loss",
                                                    "held-out task score"]), interactive=False,
                              label="The mixture against each adapter alone and the uniform mixture",
                              elem_id="mixture-evaluation")

    refresh.click(lambda: gr.Dropdown(choices=mixable_runs()), None, chosen, api_visibility="private")
    go_button.click(shows_errors(outputs=4, blank={1: gr.Plot(visible=False)})(learn),
                    [chosen, target, shots, iterations, heldout], [summary, chart, weights, evaluation],
                    api_visibility="private")
