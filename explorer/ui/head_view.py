"""What the page shows for a feature-extraction run: the confusion matrix or the cosine-similarity heatmaps beside
the loss curve (Fine-tune), the head's metrics against its baselines, and Compare's per-text table.

Everything is read from the run's log events ("classification", "embedding", "comparison", written by
explorer.train.heads) or from explorer.compare.heads' result; nothing is recomputed here.
"""

from __future__ import annotations

from html import escape

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def result_event(events: list[dict]) -> dict | None:
    return next((e for e in reversed(events) if e.get("event") in ("classification", "embedding")), None)


def _loss_traces(fig, events: list[dict]) -> None:
    steps = [e for e in events if e.get("event") == "step"]
    evals = [e for e in events if "eval_loss" in e]
    fig.add_scatter(x=[e["step"] for e in steps], y=[e["loss"] for e in steps], mode="lines",
                    name="training loss", row=1, col=1)
    fig.add_scatter(x=[e["step"] for e in evals], y=[e["eval_loss"] for e in evals], mode="lines+markers",
                    name="held-out loss", row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=1)


def head_figure(events: list[dict]) -> go.Figure:
    """The loss curve, and the confusion matrix (classifier) or the base's and the head's cosine similarities
    of a few held-out pairs (embedding)."""
    result = result_event(events)
    if result["event"] == "classification":
        labels = result["labels"]
        fig = make_subplots(rows=1, cols=2, column_widths=[0.42, 0.58], horizontal_spacing=0.2,
                            subplot_titles=("Loss", f"Confusion matrix, held-out<br>accuracy "
                                                    f"{result['eval_accuracy']:.2f}"))
        _loss_traces(fig, events)
        matrix = result["confusion_matrix"]
        fig.add_heatmap(z=matrix, x=labels, y=labels, colorscale="Blues", showscale=False, text=matrix,
                        texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
                        row=1, col=2)
        fig.update_xaxes(title_text="predicted", row=1, col=2)
        fig.update_yaxes(title_text="true", autorange="reversed", row=1, col=2)
    else:
        k = result["heatmap_pairs"]
        names = [f"a{i + 1}" for i in range(k)], [f"b{i + 1}" for i in range(k)]
        fig = make_subplots(rows=1, cols=3, column_widths=[0.34, 0.33, 0.33], horizontal_spacing=0.08,
                            subplot_titles=("Loss", f"Cosine, untrained base<br>recall@1 "
                                                    f"{result['eval_recall_at_1_base']:.2f}",
                                            f"Cosine, trained head<br>recall@1 {result['eval_recall_at_1']:.2f}"))
        _loss_traces(fig, events)
        for col, key in ((2, "similarity_base"), (3, "similarity")):
            z = result[key]
            fig.add_heatmap(z=z, x=names[1], y=names[0], zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                            showscale=col == 3, text=[[f"{v:.2f}" for v in row] for row in z],
                            texttemplate="%{text}", row=1, col=col)
            fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(height=380, margin=dict(l=40, r=10, t=60, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def metric_lines(events: list[dict]) -> list[str]:
    """The head's results in words, beside its baselines (and LoRA's, for a classifier)."""
    result = result_event(events)
    if result is None:
        return []
    if result["event"] == "classification":
        lines = [f"- held-out accuracy: trained head **{result['eval_accuracy']:.2f}** (macro-F1 "
                 f"{result['eval_macro_f1']:.2f}) against {result['eval_accuracy_base']:.2f} for always answering "
                 f"the majority class '{escape(result['majority_label'])}' (macro-F1 {result['eval_macro_f1_base']:.2f})"]
        lora = next((e for e in events if e.get("event") == "comparison"), None)
        start = next((e for e in events if e.get("event") == "start"), None)
        steps = [e for e in events if e.get("event") == "step"]
        if lora and start and steps:
            reading = start["feature_seconds"]
            lines.append(f"- the same task, data, steps and batch size: trained head — accuracy "
                         f"{result['eval_accuracy']:.2f}, {start['trainable_params']:,} trainable parameters, "
                         f"{reading:.1f} s reading each text once through the frozen backbone + "
                         f"{steps[-1]['elapsed'] - reading:.1f} s of training steps; {escape(lora['method'])} — "
                         f"accuracy {lora['accuracy']:.2f} (macro-F1 {lora['macro_f1']:.2f}), "
                         f"{lora['trainable_params']:,} trainable parameters, {lora['train_seconds']:.1f} s of "
                         f"training steps ({lora['seconds']:.0f} s with loading)")
        return lines
    return [f"- held-out retrieval recall@1 (each a finds its b among all held-out b's): untrained mean-pooled base "
            f"{result['eval_recall_at_1_base']:.2f} → trained head **{result['eval_recall_at_1']:.2f}**; the "
            f"heatmaps show the cosine similarity of the first {result['heatmap_pairs']} pairs (right pairs on the "
            "diagonal)"]


def labels_html(result: dict) -> str:
    """Compare's table for a head run: every text, its true label (or own paraphrase), and what each model said;
    right answers ticked. Every piece of text is escaped."""
    columns = result["columns"]
    classify = result["kind"] == "classification"
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for row in result["rows"]:
        cells = []
        for c in columns:
            said = row["predicted"][c]
            mark = "" if row["true"] is None else (" ✓" if said == row["true"] else " ✗")
            cells.append(f"<td>{escape(said)}{mark}</td>")
        true = "—" if row["true"] is None else escape(row["true"])
        rows.append(f"<tr><td>{escape(row['text'])}</td><td><b>{true}</b></td>{''.join(cells)}</tr>")
    first = ("text", "true label") if classify else ("sentence a", "its paraphrase b")
    score = ", ".join(f"{escape(c)} {v:.2f}" for c, v in result["accuracy"].items() if v is not None)
    what = "accuracy" if classify else "recall@1"
    note = (f"<p class='cmp-legend'>{what} on the {result['scored_rows']} rows with a known answer: {score}. "
            + ("A text typed here has no true label (—)." if classify else
               "Each model picks, among all held-out b's, the one most similar to a.") + "</p>")
    return (f'<table class="cmp-table" id="compare-labels"><tr><th>{first[0]}</th><th>{first[1]}</th>{head}</tr>'
            f"{''.join(rows)}</table>{note}")
