"""The Learn tab's "a base model learns to follow a chat": Gemma 3 270M before and after a short LoRA run on chats.

Numbers and replies come from explorer.compare.chat_demo; this file submits the demo run to the shared worker
queue (the web server never trains), follows it, and shows base → adapted side by side. Offered only once the
model is provisioned; otherwise one line says how.
"""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from ..compare import chat_demo
from ..train import estimate, lifecycle, runs
from .common import jobs, shows_errors

POLL_SECONDS = 2.0
COLUMNS = ["question", "base reply", "ended?", "adapted reply", "ended? "]


def replies_frame(result: dict) -> pd.DataFrame:
    yes = lambda ended: "yes" if ended else "no (cut at the token budget)"  # noqa: E731
    return pd.DataFrame([[r["question"], r["base"] or "(nothing)", yes(r["base_ended"]), r["adapted"] or "(nothing)",
                          yes(r["adapted_ended"])] for r in result["rows"]], columns=COLUMNS)


def availability():
    """(hint, "Check again", demo group): the hint and its button while the model is missing, the demo once there."""
    ready = chat_demo.available()
    return (gr.Markdown("" if ready else chat_demo.hint(), visible=not ready), gr.Button(visible=not ready),
            gr.Group(visible=ready))


def run_status(run_id: str) -> str:
    folder = runs.runs_dir() / run_id
    state = runs.status(folder).get("state", "?")
    steps = [e for e in runs.read_log(folder) if e.get("event") == "step"]
    where = f", step {steps[-1]['step']}, loss {steps[-1]['loss']:.3f}" if steps and state == "running" else ""
    return f"{state}{where}"


def train_and_compare(steps):
    """Reuse a finished demo run or train one through the worker queue, then show base → adapted."""
    run_id = chat_demo.find_run(int(steps))
    if run_id is None:
        config = chat_demo.demo_config(int(steps))
        guess = estimate.estimate(config, {})
        when = (f"about {guess.total_seconds / 60:.1f} min" if guess.total_seconds else f"no time estimate yet: "
                f"{guess.basis}")
        run_id = jobs().submit(config, {}).name
        yield (f"**Training** {config.steps} steps of {config.method} on {config.dataset} ({when}; Cancel stops it)",
               gr.skip(), run_id)
        while runs.status(runs.runs_dir() / run_id).get("state") not in runs.FINISHED:
            yield f"**Training** the demo run `{run_id}`: {run_status(run_id)}", gr.skip(), run_id
            time.sleep(POLL_SECONDS)
        if runs.status(runs.runs_dir() / run_id).get("state") != "done":
            yield f"**The demo run `{run_id}` did not finish:** {run_status(run_id)}", gr.skip(), run_id
            return
    yield f"**Asking the base and the adapted model** (run `{run_id}`)…", gr.skip(), run_id
    result = chat_demo.follow_chat(run_id)
    yield f"**{result['summary']}**", replies_frame(result), run_id


@shows_errors()
def cancel(run_id) -> str:
    if not run_id:
        return "No demo run is training."
    folder = runs.runs_dir() / run_id
    if runs.status(folder).get("state") not in ("queued", "running"):
        return "No demo run is training."
    if jobs().position(folder) is not None:
        jobs().stop(folder)
    else:
        lifecycle.request_stop(folder)
    return f"**Stopping** the demo run `{run_id}`."


def create_chat_section() -> None:
    gr.Markdown("A base model continues text; it was never taught to answer one turn and stop. Fine-tune Gemma 3 "
                "270M (a base model Google released for fine-tuning) on chats in Gemma's own template, and ask it "
                "held-out questions before and after: does it answer and end its turn?")
    ready = chat_demo.available()
    with gr.Row():
        hint = gr.Markdown("" if ready else chat_demo.hint(), visible=not ready, elem_id="chat-demo-hint")
        check = gr.Button("Check again", size="sm", scale=0, visible=not ready, elem_id="chat-demo-check")
    with gr.Group(visible=ready, elem_id="chat-demo") as demo:
        with gr.Row():
            steps = gr.Slider(5, 200, value=chat_demo.STEPS, step=1, label="training steps (a finished demo run is "
                              "reused)", elem_id="chat-demo-steps")
            go = gr.Button("Fine-tune and ask both", variant="primary", elem_id="chat-demo-go")
            stop = gr.Button("Cancel", variant="stop", scale=0, elem_id="chat-demo-cancel")
        status = gr.Markdown(elem_id="chat-demo-status")
        replies = gr.Dataframe(pd.DataFrame(columns=COLUMNS), label="Held-out questions, base → adapted (greedy)",
                               interactive=False, wrap=True, elem_id="chat-demo-replies",
                               column_widths=["22%", "30%", "9%", "30%", "9%"])
    run_id = gr.State("")
    check.click(availability, None, [hint, check, demo], api_visibility="private")
    go.click(shows_errors(outputs=3)(train_and_compare), steps, [status, replies, run_id],
             api_visibility="private", concurrency_limit=None)
    stop.click(cancel, run_id, status, api_visibility="private")
