"""A race's two charts (plotly, no gradio): the live held-out loss of every entrant, and the Pareto chart of
cost against quality with the front drawn. The Race tab and the HTML report both use them."""

from __future__ import annotations

import plotly.graph_objects as go

from ..human import human_bytes, human_number
from ..train import runs
from .races import Race
from .results import COSTS, QUALITIES, front

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def live_figure(race: Race, training_loss: bool = False) -> go.Figure:
    """Held-out loss against step for every entrant (its own colour), the one training now drawn thicker
    and named "(training)"; training loss, dotted, for the one training (its held-out loss comes at the end of
    the default budget) and for all on demand."""
    fig = go.Figure()
    base = race.base.get("heldout_loss")
    start = [(0, base)] if isinstance(base, float) else []  # every entrant starts from the base model
    for i, (entrant, folder) in enumerate(zip(race.entrants, race.run_folders())):
        events = runs.read_log(folder)
        state = runs.status(folder).get("state")
        running = state == "running"
        name = entrant["name"] + (" (training)" if running else "" if state in ("done", "queued") else f" ({state})")
        evals = ([] if state == "queued" else start) + [(e["step"], e["eval_loss"]) for e in events if "eval_loss" in e]
        fig.add_scatter(x=[s for s, _ in evals], y=[v for _, v in evals], mode="lines+markers",
                        name=name, line=dict(color=colour(i), width=4 if running else 2), legendgroup=str(i))
        if training_loss or running:
            steps = [e for e in events if e.get("event") == "step"]
            fig.add_scatter(x=[e["step"] for e in steps], y=[e["loss"] for e in steps], mode="lines",
                            name=f"{entrant['name']} (training loss)", legendgroup=str(i), showlegend=False,
                            line=dict(color=colour(i), width=1, dash="dot"))
    if isinstance(base, float):
        fig.add_hline(y=base, line=dict(color="#999", dash="dash"), annotation_text="base model",
                      annotation_position="top left")
    fig.update_layout(title="Held-out loss of every entrant (live; step 0 is the base model)",
                      xaxis_title="optimizer step",
                      yaxis_title="held-out loss", height=420, margin=dict(l=50, r=10, t=50, b=40),
                      legend=dict(font=dict(size=10)))
    return fig


def _shown(cost: str, value: float) -> str:
    return human_bytes(value) if cost == "peak_memory_bytes" else human_number(value)


def pareto_figure(table: list[dict], cost: str = "trainable_params", quality: str = "heldout_loss_last") -> go.Figure:
    """Kept, finished entrants as points (cost, quality); the front's members joined and named. Hovering a
    point shows the entrant's settings."""
    on_front = front(table, cost, quality)
    fig = go.Figure()
    points = [(row, f) for row, f in zip(table, on_front)
              if row["kept"] and row["state"] == "done" and isinstance(row.get(cost), (int, float))
              and isinstance(row.get(quality), (int, float))]
    for i, (row, is_front) in enumerate(points):
        hover = (f"<b>{row['name']}</b><br>method {row['method']}, options {row['options'] or 'defaults'}<br>"
                 f"learning rate {row['learning_rate']:g}<br>{COSTS[cost]}: {_shown(cost, row[cost])}<br>"
                 f"{QUALITIES[quality][0]}: {row[quality]:.3f}<br>run {row['run_id']}<extra></extra>")
        fig.add_scatter(x=[max(row[cost], 1e-9)], y=[row[quality]], mode="markers+text", name=row["name"],
                        text=[row["name"] if is_front else ""], textposition="top center",
                        marker=dict(size=14 if is_front else 9, color=colour(table.index(row)),
                                    line=dict(width=2 if is_front else 0, color="black")),
                        hovertemplate=hover, customdata=[row["run_id"]], showlegend=False)
    members = sorted((row for row, f in points if f), key=lambda r: r[cost])
    if len(members) > 1:
        fig.add_scatter(x=[r[cost] for r in members], y=[r[quality] for r in members], mode="lines",
                        line=dict(color="black", dash="dot"), name="Pareto front", hoverinfo="skip")
    log_x = cost in ("trainable_params", "inference_overhead_flops_per_token") and all(
        r[cost] > 0 for r, _ in points)
    fig.update_layout(title=f"Pareto front: {QUALITIES[quality][0]} against {COSTS[cost]} "
                            f"(front members named)", xaxis_title=COSTS[cost], yaxis_title=QUALITIES[quality][0],
                      height=440, margin=dict(l=50, r=10, t=50, b=50), xaxis_type="log" if log_x else "linear")
    return fig
