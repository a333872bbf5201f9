"""A race's two charts (plotly, no gradio): the live held-out loss of every entrant, and the Pareto chart of
cost against quality with the front drawn. The Race tab and the HTML report both use them.

Both identify every entrant by its own colour and a legend entry that carries its verdict (explorer.race.verdicts),
and mark the verdict by the marker's shape; the Pareto chart also labels every point, each label placed where
it overlaps the fewest other labels and points (lora, dora and qlora often sit on top of each other)."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from ..human import human_bytes, human_number
from ..train import runs
from . import verdicts
from .races import Race
from .results import COSTS, QUALITIES, front

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
SYMBOLS = {verdicts.LEARNED: "circle", verdicts.DID_NOT_LEARN: "x", verdicts.LOST_GENERAL: "triangle-down",
           verdicts.DIVERGED: "star-triangle-up", verdicts.FAILED: "square-x", None: "circle-open"}
DASHES = {verdicts.LEARNED: "solid", verdicts.DID_NOT_LEARN: "dash", verdicts.LOST_GENERAL: "dot",
          verdicts.DIVERGED: "dashdot"}
LEGEND_KEY = ("Marker shape: ● learned · ✕ did not learn in this budget · ▼ lost general knowledge · "
              "★ diverged (dashed line: did not learn; dotted: lost general knowledge)")
# Label placement, in pixels of a chart of the tab's size (approximate: enough to keep labels apart).
PLOT_WIDTH, PLOT_HEIGHT, CHAR_WIDTH, LABEL_HEIGHT = 900, 330, 6.6, 14
OFFSETS = ((0, -24), (0, 24), (45, -20), (-45, -20), (45, 20), (-45, 20), (0, -48), (0, 48), (80, 0), (-80, 0),
           (80, -40), (-80, -40), (80, 40), (-80, 40))


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def legend_name(row: dict | None, name: str, state: str | None) -> str:
    """The entrant's name with its verdict once judged, or what it is doing."""
    if state == "running":
        return f"{name} (training)"
    if row and row.get("verdict"):
        return f"{name} — {verdicts.WORDS[row['verdict']]}"
    return name if state in ("done", "queued", None) else f"{name} ({state})"


def live_figure(race: Race, training_loss: bool = False, table: list[dict] | None = None) -> go.Figure:
    """Held-out loss against step for every entrant (its own colour; line style and marker by its verdict), the
    one training now drawn thicker and named "(training)"; training loss, dotted, for the one training and for
    all on demand. ``table``: the race's rows (explorer.race.results.rows), for the verdicts."""
    fig = go.Figure()
    base = race.base.get("heldout_loss")
    start = [(0, base)] if isinstance(base, float) else []  # every entrant starts from the base model
    judged = {row["run_id"]: row for row in table or []}
    for i, (entrant, folder) in enumerate(zip(race.entrants, race.run_folders())):
        events = runs.read_log(folder)
        state = runs.status(folder).get("state")
        running = state == "running"
        row = judged.get(entrant["run_id"])
        verdict = row.get("verdict") if row else None
        evals = ([] if state == "queued" else start) + [(e["step"], e["eval_loss"]) for e in events
                                                        if "eval_loss" in e and e.get("step")]
        fig.add_scatter(x=[s for s, _ in evals], y=[v for _, v in evals], mode="lines+markers",
                        name=legend_name(row, entrant["name"], state), legendgroup=str(i),
                        line=dict(color=colour(i), width=4 if running else 2, dash=DASHES.get(verdict, "solid")),
                        marker=dict(symbol=SYMBOLS.get(verdict, "circle"), size=8))
        if training_loss or running:
            steps = [e for e in events if e.get("event") == "step"]
            fig.add_scatter(x=[e["step"] for e in steps], y=[e["loss"] for e in steps], mode="lines",
                            name=f"{entrant['name']} (training loss)", legendgroup=str(i), showlegend=False,
                            line=dict(color=colour(i), width=1, dash="dot"))
    if isinstance(base, float):
        fig.add_hline(y=base, line=dict(color="#999", dash="dash"), annotation_text="base model",
                      annotation_position="top left")
    fig.update_layout(title=f"Held-out loss of every entrant every {race.settings.eval_every} steps (live; step 0 "
                            "is the base model)", xaxis_title="optimizer step",
                      yaxis_title="held-out loss", height=440, margin=dict(l=50, r=10, t=50, b=40),
                      legend=dict(font=dict(size=11), title=dict(text="entrant — verdict")))
    return fig


def _shown(cost: str, value: float) -> str:
    return human_bytes(value) if cost == "peak_memory_bytes" else human_number(value)


def _overlap(a: tuple, b: tuple) -> float:
    """Overlapping area of two boxes (x0, y0, x1, y1)."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(points: list[tuple[float, float, str]]) -> list[tuple[int, int]]:
    """For points in pixels (x right, y down) with their labels, an offset (dx, dy) per label, chosen greedily
    among OFFSETS to overlap the fewest labels already placed and points (a point is a 12-px box)."""
    dots = [(x - 6, y - 6, x + 6, y + 6) for x, y, _ in points]
    placed, offsets = [], []
    for x, y, text in points:
        width = CHAR_WIDTH * len(text) + 4

        def box(dx, dy):
            return (x + dx - width / 2, y + dy - LABEL_HEIGHT / 2, x + dx + width / 2, y + dy + LABEL_HEIGHT / 2)

        def badness(offset):
            b = box(*offset)
            outside = max(0, -b[0]) + max(0, b[2] - PLOT_WIDTH) + max(0, -b[1]) + max(0, b[3] - PLOT_HEIGHT)
            return sum(_overlap(b, other) for other in placed + dots) + 50 * outside

        best = min(OFFSETS, key=badness)
        placed.append(box(*best))
        offsets.append(best)
    return offsets


def _pixels(values: list[float], log: bool, size: float, flip: bool) -> list[float]:
    scaled = [math.log10(v) if log else v for v in values]
    low, high = min(scaled), max(scaled)
    span = (high - low) or 1.0
    low, span = low - 0.08 * span, span * 1.16  # plotly's own padding, roughly
    return [size * (1 - (v - low) / span) if flip else size * (v - low) / span for v in scaled]


def pareto_figure(table: list[dict], cost: str = "trainable_params", quality: str = "heldout_loss_last") -> go.Figure:
    """Kept, finished entrants as points (cost, quality), each labelled and in the legend with its verdict; the
    front's members joined. Hovering a point shows the entrant's settings."""
    on_front = front(table, cost, quality)
    fig = go.Figure()
    points = [(row, f) for row, f in zip(table, on_front)
              if row["kept"] and row["state"] in ("done", verdicts.DIVERGED)
              and isinstance(row.get(cost), (int, float)) and isinstance(row.get(quality), (int, float))
              and math.isfinite(row[quality])]
    log_x = cost in ("trainable_params", "inference_overhead_flops_per_token") and all(
        r[cost] > 0 for r, _ in points)
    for row, is_front in points:
        verdict = row.get("verdict")
        hover = (f"<b>{row['name']}</b> — {verdicts.WORDS.get(verdict, 'not judged')}<br>method {row['method']}, "
                 f"options {row['options'] or 'defaults'}<br>learning rate {row['learning_rate']:g}<br>"
                 f"{COSTS[cost]}: {_shown(cost, row[cost])}<br>{QUALITIES[quality][0]}: {row[quality]:.3f}<br>"
                 f"run {row['run_id']}<extra></extra>")
        fig.add_scatter(x=[max(row[cost], 1e-9)], y=[row[quality]], mode="markers",
                        name=legend_name(row, row["name"], None) + (" ★" if is_front else ""),
                        marker=dict(size=14 if is_front else 10, color=colour(table.index(row)),
                                    symbol=SYMBOLS.get(verdict, "circle"),
                                    line=dict(width=2 if is_front else 0, color="black")),
                        hovertemplate=hover, customdata=[row["run_id"]])
    if points:
        xs = _pixels([max(r[cost], 1e-9) for r, _ in points], log_x, PLOT_WIDTH, flip=False)
        ys = _pixels([r[quality] for r, _ in points], False, PLOT_HEIGHT, flip=True)
        for (row, _), (dx, dy) in zip(points, place_labels([(x, y, r["name"]) for x, y, (r, _) in
                                                             zip(xs, ys, points)])):
            x = max(row[cost], 1e-9)
            fig.add_annotation(x=math.log10(x) if log_x else x, y=row[quality], text=row["name"], ax=dx, ay=dy,
                               showarrow=True, arrowhead=0, arrowwidth=1, arrowcolor="#888",
                               font=dict(size=11, color=colour(table.index(row))), bgcolor="rgba(255,255,255,0.8)")
    members = sorted((row for row, f in points if f), key=lambda r: r[cost])
    if len(members) > 1:
        fig.add_scatter(x=[r[cost] for r in members], y=[r[quality] for r in members], mode="lines",
                        line=dict(color="black", dash="dot"), name="Pareto front (★: nothing is both cheaper and "
                        "better)", hoverinfo="skip")
    fig.update_layout(title=f"{QUALITIES[quality][0]} against {COSTS[cost]}", xaxis_title=COSTS[cost],
                      yaxis_title=QUALITIES[quality][0], height=480, margin=dict(l=50, r=10, t=50, b=50),
                      xaxis_type="log" if log_x else "linear",
                      legend=dict(font=dict(size=11), title=dict(text="entrant — verdict")))
    return fig
