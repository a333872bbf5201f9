"""A race as one self-contained HTML file (plotly's script inlined: it opens offline) and as CSV."""

from __future__ import annotations

import html
import re
import time

from ..human import human_bytes, human_number
from ..train import runs
from . import charts, reading, results, verdicts
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


def _merge(r: dict) -> str:
    if r.get("new_model"):
        return "nothing to merge (a new model)"
    return "yes" if r["mergeable"] else "no"


def table_html(table: list[dict]) -> str:
    head = ("entrant", "verdict", "trainable (measured)", "Calculator's count", "process peak memory (measured)",
            "process peak memory (predicted)", "measured ÷ predicted", "tokens per second", "training seconds",
            "held-out loss",
            "task score", "forgetting probe", "saved", "inference overhead FLOPs per token", "merges")
    rows = []
    for r in table:
        loss = (f"{r['heldout_loss_first']:.3f} → {r['heldout_loss_last']:.3f}"
                if isinstance(r["heldout_loss_last"], float) and isinstance(r["heldout_loss_first"], float) else "")
        task = (f"{r['task_score_base']:.2f} → {r['task_score_adapted']:.2f}"
                if isinstance(r["task_score_adapted"], float) and isinstance(r["task_score_base"], float) else "")
        probe = (f"{r['probe_score_base']:.2f} → {r['probe_score']:.2f}"
                 if isinstance(r["probe_score"], float) and isinstance(r["probe_score_base"], float) else "")
        name = html.escape(r["name"]) + ("" if r["kept"] else " (other rate)")
        judged = verdicts.WORDS.get(r["verdict"], r["verdict_reason"]) + (
            f": {html.escape(r['error'])}" if r["error"] else "")
        cells = [name, html.escape(judged), _cell(r["trainable_params"]), _cell(r["calculator_trainable_params"]),
                 _cell(r["peak_memory_bytes"], "bytes"), _cell(r["predicted_peak_bytes"], "bytes"),
                 f"×{r['memory_ratio']:.2f}" if r["memory_ratio"] else "",
                 _cell(r["tokens_per_second"]), _cell(r["train_seconds"]), loss, task, probe,
                 _cell(r["saved_bytes"], "bytes"),
                 "" if r["new_model"] else _cell(r["inference_overhead_flops_per_token"], "big"), _merge(r)]
        rows.append(f"<tr class='{'front' if r['pareto'] else ''}'>" + "".join(f"<td>{c}</td>" for c in cells)
                    + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
            "<p class='note'>Bold: on the Pareto front of held-out loss against trainable parameters. Process peak "
            "memory: measured is the training process's peak resident memory (Python, torch and the data "
            "included); predicted is the Calculator's count of what training holds (weights, gradients, optimizer "
            "state, activations, the CPU optimizer step's temporaries) plus the process's runtime baseline measured "
            "as training starts (on a GPU: torch's peak allocated, no baseline).</p>")


def _paragraphs(markdown: str) -> str:
    """The reading's markdown (bold, italics, line breaks) as HTML, its text escaped."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(markdown, quote=False))
    return re.sub(r"(?<![\w*])\*(\S.*?\S)\*(?![\w*])", r"<i>\1</i>", text).replace("\n", "<br>")


def to_html(race: Race) -> str:
    table = results.rows(race)
    s = race.settings
    found = reading.reading(table, questions=s.eval_examples)
    live = charts.live_figure(race, table=table).to_html(full_html=False, include_plotlyjs=True)
    front = charts.pareto_figure(table).to_html(full_html=False, include_plotlyjs=False)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Race {race.race_id}</title>"
            f"<style>{STYLE}</style></head><body><h1>PEFT Explorer race {race.race_id}</h1>"
            f"<p>{html.escape(s.model)} on {html.escape(runs.dataset_label(s.dataset))}: {s.steps} optimizer steps "
            f"per entrant, batch {s.batch_size}, sequence length {s.seq_len}, seed {s.seed} (same data in the same "
            f"order for every entrant), each at its method's default learning rate"
            f"{' and a ×0.3/×1/×3 sweep' if s.rate_sweep else ''}. Measured on the machine that ran it; saved "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(race.created))}.</p>"
            f"<p>{_paragraphs(reading.verdict_markdown(found))}</p>{table_html(table)}{live}"
            f"<p class='note'>{html.escape(charts.LEGEND_KEY)}</p>{front}"
            f"<p>{_paragraphs(reading.details_markdown(found))}</p></body></html>")
