"""A race as one self-contained HTML file (plotly's script inlined: it opens offline) and as CSV."""

from __future__ import annotations

import html
import time

from ..human import human_bytes, human_number
from ..train import runs
from . import charts, reading, results
from .races import Race

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;
font-size:13px}td,th{border:1px solid #ddd;padding:4px 6px;text-align:right}td:first-child,th:first-child{
text-align:left}.front{font-weight:bold}.note{color:#555;font-size:13px}"""


def _cell(value, kind: str = "") -> str:
    if value is None or value == "":
        return ""
    if kind == "bytes":
        return human_bytes(value)
    if isinstance(value, float):
        return f"{value:.3f}" if kind != "big" else human_number(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return html.escape(str(value))


def table_html(table: list[dict]) -> str:
    head = ("entrant", "trainable (measured)", "Calculator's count", "peak memory", "predicted", "tokens/s",
            "train s", "held-out loss", "task score", "probe", "saved", "inference overhead FLOPs/token", "merges")
    rows = []
    for r in table:
        loss = (f"{r['heldout_loss_first']:.3f} → {r['heldout_loss_last']:.3f}"
                if isinstance(r["heldout_loss_last"], float) and isinstance(r["heldout_loss_first"], float) else "")
        task = (f"{r['task_score_base']:.2f} → {r['task_score_adapted']:.2f}"
                if isinstance(r["task_score_adapted"], float) and isinstance(r["task_score_base"], float) else "")
        probe = (f"{r['probe_score_base']:.2f} → {r['probe_score']:.2f}"
                 if isinstance(r["probe_score"], float) and isinstance(r["probe_score_base"], float) else "")
        name = html.escape(r["name"]) + ("" if r["kept"] else " (other rate)") + (
            f" — failed: {html.escape(r['error'])}" if r["error"] else "")
        cells = [name, _cell(r["trainable_params"]), _cell(r["calculator_trainable_params"]),
                 _cell(r["peak_memory_bytes"], "bytes"), _cell(r["predicted_peak_bytes"], "bytes"),
                 _cell(r["tokens_per_second"]), _cell(r["train_seconds"]), loss, task, probe,
                 _cell(r["saved_bytes"], "bytes"), _cell(r["inference_overhead_flops_per_token"], "big"),
                 "yes" if r["mergeable"] else "no"]
        rows.append(f"<tr class='{'front' if r['pareto'] else ''}'>" + "".join(f"<td>{c}</td>" for c in cells)
                    + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
            "<p class='note'>Bold: on the Pareto front of held-out loss against trainable parameters.</p>")


def to_html(race: Race) -> str:
    table = results.rows(race)
    s = race.settings
    live = charts.live_figure(race).to_html(full_html=False, include_plotlyjs=True)
    front = charts.pareto_figure(table).to_html(full_html=False, include_plotlyjs=False)
    read = html.escape(reading.as_markdown(table)).replace("\n", "<br>").replace("**", "")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Race {race.race_id}</title>"
            f"<style>{STYLE}</style></head><body><h1>PEFT Explorer race {race.race_id}</h1>"
            f"<p>{html.escape(s.model)} on {html.escape(runs.dataset_label(s.dataset))}: {s.steps} optimizer steps "
            f"per entrant, batch {s.batch_size}, sequence length {s.seq_len}, seed {s.seed} (same data in the same "
            f"order for every entrant), each at its method's default learning rate"
            f"{' and a ×0.3/×1/×3 sweep' if s.rate_sweep else ''}. Measured on the machine that ran it; saved "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(race.created))}.</p>"
            f"{table_html(table)}{live}{front}<p>{read}</p></body></html>")
