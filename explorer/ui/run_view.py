"""A run as the page shows it: the runs table, the live loss chart, the progress line and the metrics.

Everything is read from the run's folder (explorer.train.runs.Run and its log.jsonl), so any run can be
shown, whoever started it and whenever: the Fine-tune tab re-attaches to a run after a reload, from a
second browser tab, or when a row of the runs table is clicked.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ..human import human_bytes
from ..train import runs
from ..train.runs import Run
from . import head_view

TABLE_COLUMNS = ["run", "state", "method", "model", "dataset", "steps", "train loss", "held-out loss",
                 "task score base → adapted", "time", "where"]


def _number(value, fmt: str = "{:.3f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def steps_text(run: Run, events: list[dict] | None = None) -> str:
    """Steps done: the summary's count once finished; while running, the last step of the log of total."""
    if run.finished:
        return str(run.steps_trained) if run.summary else ""
    events = runs.read_log(run.folder) if events is None else events
    done = next((e["step"] for e in reversed(events) if e.get("event") == "step"), 0)
    total = run.config.steps if run.config else "?"
    return f"{done}/{total}" if run.state == "running" else ""


def where_text(run: Run, position: int | None = None) -> str:
    """Where the run waits or trains: its place in the queue, or the Ray node and device (GPU name or CPU
    cores) its job landed on (explorer.train.backends), or this server for a local worker."""
    if run.state == "queued":
        if position:
            return f"queue #{position}"
        return "starting" if position == 0 else "queued"
    if run.status.get("backend") == "ray":
        node, device = run.status.get("node") or "?", run.status.get("device") or ""
        return f"Ray {node}" + (f" · {device}" if device else "")
    return "this server" if run.state in ("running", "done", "diverged", "stopped") or run.summary else ""


def table_row(run: Run, position: int | None = None) -> list:
    summary, config = run.summary, run.config
    base, adapted = _number(summary.get("task_score_base"), "{:.2f}"), _number(summary.get("task_score_adapted"), "{:.2f}")
    return [run.run_id, run.state, config.method if config else "", config.model if config else "",
            run.dataset_label, steps_text(run), _number(summary.get("train_loss_last")),
            _number(summary.get("eval_loss_last")), f"{base} → {adapted}" if base or adapted else "",
            _number(summary.get("seconds"), "{:.0f} s"), where_text(run, position)]


def runs_table() -> pd.DataFrame:
    from .common import jobs  # the queue knows the positions of waiting runs

    rows = []
    for run in runs.list_runs():
        rows.append(table_row(run, jobs().position(run.folder) if run.state == "queued" else None))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def table_signature() -> tuple:
    """Changes whenever a row of the runs table would: runs added or removed, a status, a log or a summary
    written. Cheap (file times only), so a timer can poll it."""
    signature = []
    for folder in runs.run_folders():
        times = []
        for name in ("status.json", "summary.json", "log.jsonl"):
            try:
                times.append((folder / name).stat().st_mtime_ns)
            except OSError:
                times.append(0)
        signature.append((folder.name, *times))
    return tuple(signature)


def loss_figure(events: list[dict], title: str = "Loss (live)") -> go.Figure:
    steps = [e for e in events if e.get("event") == "step"]
    evals = [e for e in events if "eval_loss" in e]
    fig = go.Figure()
    fig.add_scatter(x=[e["step"] for e in steps], y=[e["loss"] for e in steps], mode="lines", name="training loss")
    fig.add_scatter(x=[e["step"] for e in evals], y=[e["eval_loss"] for e in evals], mode="lines+markers",
                    name="held-out loss")
    fig.update_layout(xaxis_title="step", yaxis_title="loss", height=320, margin=dict(l=40, r=10, t=40, b=40),
                      title=title)
    return fig


def run_figure(events: list[dict]) -> go.Figure:
    """The loss chart, with the confusion matrix or similarity heatmaps once a head run has its results."""
    return head_view.head_figure(events) if head_view.result_event(events) else loss_figure(events)


def progress_text(run: Run, events: list[dict], position: int | None) -> str:
    """One line: where the run is (queued, preparing, training with a bar, finished, failed...)."""
    name, label = run.state, f"run `{run.run_id}`"
    if name == "queued":
        where = f"position {position} in the queue" if position else "waiting for a worker"
        return f"**Queued:** {where} (runs train in turn). {label}."
    if run.status.get("backend") == "ray":
        label += f" on {where_text(run)}"
    if name == "failed":
        return f"**Failed:** {run.error or 'unknown error'} ({label})"
    if name in ("interrupted", "cancelled"):
        return f"**{name.capitalize()}.** {run.error} ({label})".replace(" . (", " (")
    start = next((e for e in events if e.get("event") == "start"), None)
    steps = [e for e in events if e.get("event") == "step"]
    if not start:
        if name == "stopped":
            return f"**Stopped** before the first step: nothing was trained or saved ({label})."
        return f"**Preparing** {label}: loading the model, scoring the base model on held-out examples…"
    total = start["steps"]
    done = steps[-1]["step"] if steps else 0
    done = max([done] + [e["step"] for e in events if e.get("event") == "diverged"])  # a nan step logs no step
    filled = int(20 * done / max(total, 1))
    bar = "█" * filled + "░" * (20 - filled)
    eta = f", about {steps[-1]['eta']:.0f} s left" if steps and name == "running" else ""
    state = {"running": "Training", "done": "Finished", "stopped": "Stopped", "diverged": "Diverged"}.get(name, name)
    after = " — scoring the adapted model…" if name == "running" and done == total else ""
    if name == "diverged":  # the rule's own sentence: where, why, the rate it used and a lower one
        why = run.summary.get("divergence") or run.status.get("reason") or ""
        after = f": {why.partition(': ')[2] or why}" if why else ": the loss blew up, so the run stopped."
    return f"**{state}** `{bar}` step {done}/{total}{eta}{after}  ({label})"


def _share(right, asked) -> str:
    return f"{right} of {asked}" if isinstance(right, int) and asked else "not measured"


def learned_lines(events: list[dict]) -> list[str]:
    """What the fine-tune learned (explorer/learned.py): the sentence, then its three numbers, base → adapted."""
    learned = next((e for e in reversed(events) if e.get("event") == "learned"), None)
    if not learned:
        return []
    lines = [f"**What it learned:** {learned['verdict']}"]
    if learned.get("similarity_base") is not None:
        adapted = _number(learned.get("similarity_adapted"), "{:.2f}") or "not measured"
        lines.append(f"- resemblance to the held-out answers (ROUGE-L, 0 to 1): base "
                     f"{learned['similarity_base']:.2f} → fine-tuned {adapted}")
    if learned.get("facts_checked"):
        checked = learned["facts_checked"]
        lines.append(f"- facts from the training data recalled (training questions asked again): base "
                     f"{_share(learned['facts_recalled_base'], checked)} → fine-tuned "
                     f"{_share(learned.get('facts_recalled_adapted'), checked)}")
    if learned.get("probe_questions"):
        asked = learned["probe_questions"]
        lines.append(f"- general questions answered (the forgetting probe): base "
                     f"{_share(learned['probe_right_base'], asked)} → fine-tuned "
                     f"{_share(learned.get('probe_right_adapted'), asked)}")
    return lines + [""]


def metrics_text(events: list[dict]) -> str:
    start = next((e for e in events if e.get("event") == "start"), {})
    steps = [e for e in events if e.get("event") == "step"]
    evals = [e["eval_loss"] for e in events if "eval_loss" in e]
    scores = {e["which"]: e["score"] for e in events if e.get("event") == "score"}
    data_event = next((e for e in events if e.get("event") == "data"), {})
    lines = learned_lines(events)
    if data_event:
        lines.append(f"- data: {data_event['train_examples']} training and {data_event['heldout_examples']} held-out "
                     f"examples; {data_event['truncated']} truncated to the sequence length")
    if start:
        agree = "equal" if start["trainable_params"] == start["calculator_trainable_params"] else "differ"
        lines.append(f"- trainable parameters: measured {start['trainable_params']:,}; Calculator "
                     f"{start['calculator_trainable_params']:,} ({agree}); learning rate {start['learning_rate']:g} "
                     f"on {start['device']}")
    if evals:
        lines.append(f"- held-out loss: {evals[0]:.3f} → {evals[-1]:.3f}" + (" (before training)" if len(evals) == 1
                                                                            else ""))
    if steps:
        last = steps[-1]
        lines.append(f"- throughput: {last['tokens_per_second']:.0f} tokens/s")
        how = ("torch's peak allocated on the GPU" if start.get("device") == "cuda" else
               "the worker's peak resident memory, libraries and what the allocator keeps after freeing included")
        baseline = start.get("runtime_baseline_bytes")
        lines.append(f"- process peak memory: measured {human_bytes(last['peak_memory_bytes'])} ({how}); predicted "
                     f"{human_bytes(start['predicted_peak_bytes'])} (weights, gradients, optimizer states and "
                     "activations" + (f", and the process's runtime baseline of {human_bytes(baseline)}" if baseline
                                      else "") + ")")
    if "base" in scores:
        adapted = f"{scores['adapted']:.2f}" if "adapted" in scores else "…"
        lines.append(f"- held-out task score: base {scores['base']:.2f} → adapted {adapted}")
    return "\n".join(lines + head_view.metric_lines(events))
