"""Turn a CalcResult into what the Calculator tab shows: text, tables and plotly charts."""

from __future__ import annotations

import math
from html import escape

import pandas as pd
import plotly.graph_objects as go

from .. import calculator
from ..calculator.claims import checked_claims
from ..costs import memory, sharding
from ..human import human_bytes, human_number
from ..learn.diagram import block_svg

MEMORY_PARTS = [("weights_bytes", "base weights"), ("trainable_bytes", "trainable weights"),
                ("gradients_bytes", "gradients"), ("optimizer_bytes", "optimizer states"),
                ("activations_bytes", "activations")]


def headline(r: calculator.CalcResult) -> str:
    total = r.total_params_with_method
    if r.exact_counts is None:
        check = "Exact count (the method built for real on the meta device): running…"
    elif r.agrees:
        check = "**Verified:** formula = exact count (the method was built for real on the meta device and counted)"
    else:
        check = f"**Mismatch:** the exact count is {r.exact_counts[0]:,} trainable of {r.exact_counts[1]:,}"
    saved = "saved weights" if r.method_obj.new_model else "adapter file"
    return (f"### {escape(r.method_obj.title)} on {escape(r.spec.name)}\n"
            f"**{r.trainable:,} trainable parameters** of {total:,} "
            f"(**{100 * r.trainable / total:.4g}%**) · {saved} ≈ {human_bytes(r.adapter_file_bytes)}\n\n"
            f"{per_gpu_line(r)}{check}")


def per_gpu_line(r: calculator.CalcResult) -> str:
    """Training memory per GPU under the chosen GPUs and sharding (nothing more to say for one plain GPU)."""
    g, s = r.per_gpu, r.settings
    if g.num_gpus == 1 and g.sharding == "none" and not g.offloaded_bytes:
        return ""
    gathered = f" + {human_bytes(g.gathered_bytes)} gathered ({escape(g.gathered_unit)})" if g.gathered_bytes else ""
    offloaded = f"; {human_bytes(g.offloaded_bytes)} of optimizer states in CPU memory" if g.offloaded_bytes else ""
    return (f"**Per GPU** ({g.num_gpus} × {escape(s.sharding)}, micro-batch {s.batch_size}): "
            f"**{human_bytes(g.total_bytes)}** = {human_bytes(g.model_states_bytes)} model states + "
            f"{human_bytes(g.activations_bytes)} activations{gathered}{offloaded}\n\n")


def formula_table(r: calculator.CalcResult) -> pd.DataFrame:
    rows = [[t.module, f"{t.count:,}", t.expression] for t in r.terms]
    rows.append(["total", f"{r.trainable_formula:,}", ""])
    rows += [[f"{t.module}: not trained", f"({t.count:,})", t.expression] for t in r.frozen_terms]
    return pd.DataFrame(rows, columns=["module", "parameters", "formula"])


def method_card(r: calculator.CalcResult) -> str:
    m = r.method_obj
    merge = escape(m.merge_summary)
    svg = block_svg(r.spec.arch, m.adaptation(r.spec, r.options), m.title)
    return (f"<div class='method-card'><p><b>Where it adapts:</b> {escape(m.where)}</p>"
            f"<p>{escape(m.explanation)}</p><p><b>When to use:</b> {escape(m.when_to_use)}</p>"
            f"<p>{merge}</p><div style='max-width:560px'>{svg}</div></div>")


def flops_table(r: calculator.CalcResult) -> pd.DataFrame:
    f = r.flops
    s = r.settings.seq_len
    rows = [
        ["base model forward", human_number(f.base_forward_per_token), "2·(weights in products) + attention's QKᵀ and PV"],
        ["adapted model forward (unmerged)", human_number(f.forward_per_token), "the method's extra matmuls included"],
        ["training step (forward + backward)", human_number(f.train_per_token),
         f"{f.train_per_token / f.base_forward_per_token:.2f}× a base forward"],
        ["training with gradient checkpointing", human_number(f.train_per_token_checkpointing), "one more forward"],
        ["inference overhead, unmerged", human_number(f.inference_overhead_per_token_unmerged),
         f"{100 * f.inference_overhead_per_token_unmerged / f.base_forward_per_token:+.2f}% of a base forward"],
        ["inference overhead, merged", human_number(f.inference_overhead_per_token_merged),
         "merged: no extra work" if r.method_obj.mergeable else "cannot merge: same as unmerged"],
    ]
    if not r.spec.arch.flops_exact:
        rows.append(["approximate", "", "this model runs products whose FLOPs do not grow as a·s + b·s² with the "
                     "sequence (a chunked scan): the figures extrapolate from short sequences"])
    if f.elementwise_overhead_per_token:
        rows.append(["IA³ element-wise multiplies", human_number(f.elementwise_overhead_per_token),
                     "not matmul FLOPs; vanish when merged"])
    return pd.DataFrame(rows, columns=[f"FLOPs per token (sequence {s})", "value", "note"])


def memory_figure(r: calculator.CalcResult) -> go.Figure:
    # The other checkpointing choice: only the memory terms, not a whole second calculation.
    toggled = memory.TrainSettings(**{**r.settings.__dict__,
                                      "gradient_checkpointing": not r.settings.gradient_checkpointing})
    with_ckpt = calculator.training_memory(r.spec, r.method, r.options, r.trainable_formula, toggled)
    bars = {"training (as set)": r.training.as_dict(),
            ("training, checkpointing on" if not r.settings.gradient_checkpointing
             else "training, checkpointing off"): with_ckpt.as_dict()}
    fig = go.Figure()
    for key, label in MEMORY_PARTS:
        fig.add_bar(name=label, x=list(bars), y=[b[key] / memory.GIB for b in bars.values()])
    g = r.per_gpu
    if g.num_gpus > 1 or g.sharding != "none" or g.offloaded_bytes:
        label = f"each of {g.num_gpus} GPUs ({r.settings.sharding})"
        fig.add_bar(name="per GPU: model states", x=[label], y=[g.model_states_bytes / memory.GIB])
        fig.add_bar(name="per GPU: activations", x=[label], y=[g.activations_bytes / memory.GIB])
        if g.gathered_bytes:
            fig.add_bar(name="per GPU: gathered unit", x=[label], y=[g.gathered_bytes / memory.GIB])
    fig.add_bar(name="inference: weights", x=["inference"], y=[(r.inference_bytes - r.kv_cache_bytes) / memory.GIB])
    fig.add_bar(name="inference: KV cache", x=["inference"], y=[r.kv_cache_bytes / memory.GIB])
    fig.update_layout(barmode="stack", yaxis_title="GiB", height=360, margin=dict(l=40, r=10, t=30, b=30),
                      title=f"Memory, batch {r.settings.batch_size} × {r.settings.seq_len} tokens")
    return fig


def memory_breakdown(r: calculator.CalcResult, records: dict) -> str:
    """The training memory term by term with where each comes from, plus this machine's runtime baseline (the
    largest a CPU run here measured), adding up to the predicted process peak; then how the predictions fared on
    this machine's runs of the method (explorer.train.track_record)."""
    from ..train import track_record

    baseline = track_record.cpu_runtime_baseline(records)
    peak = memory.process_peak(r.training, baseline or 0)
    rows = ["| term | process peak memory (predicted) | where it comes from |", "|---|---:|---|"]
    for label, value, source in peak.terms():
        if label == "runtime baseline":
            source = (("the largest a CPU run here measured: " if baseline else "no CPU run here yet to measure "
                       "it: ") + source)
        rows.append(f"| {label} | {human_bytes(value)} | {escape(source, quote=False)} |")
    rows.append(f"| **predicted process peak (on this machine's CPU)** | **{human_bytes(peak.total_bytes)}** | "
                f"the terms above added up; on a GPU (torch's max allocated) neither the CPU terms nor the runtime "
                f"baseline count ({human_bytes(r.training.total_bytes)}) |")
    record = records.get(track_record.key(r.method, r.method_obj.data_kind(r.options)))
    return (f"**Training memory, term by term** · {escape(r.method_obj.title)}: "
            f"**{escape(track_record.line(record))}**\n\n" + "\n".join(rows))


def fits_table(r: calculator.CalcResult) -> pd.DataFrame:
    """GPU size × count: does each GPU hold its share of training (the chosen sharding), and does one GPU
    hold inference."""
    table = r.fits_gpus()
    rows = []
    for gb in sharding.GPU_SIZES_GB:
        rows.append([f"{gb} GiB"] + ["yes" if table[gb][n] else "no" for n in sharding.GPU_COUNTS]
                    + ["yes" if r.inference_bytes <= gb * memory.GIB else "no"])
    counts = [f"training on {n} GPU{'s' if n > 1 else ''}" for n in sharding.GPU_COUNTS]
    return pd.DataFrame(rows, columns=["GPU", *counts, "inference on 1 GPU"])


def merges(method) -> str:
    return "nothing to merge (a new model)" if method.new_model else ("yes" if method.mergeable else "no")


def family_table(results: list[calculator.CalcResult]) -> pd.DataFrame:
    rows = [[x.method_obj.title, f"{x.trainable:,}", f"{100 * x.trainable / x.total_params_with_method:.3g}%",
             human_bytes(x.training.total_bytes), human_number(x.flops.inference_overhead_per_token_unmerged),
             merges(x.method_obj)] for x in results]
    return pd.DataFrame(rows, columns=["method", "trainable", "% of model", "training memory",
                                       "inference FLOPs overhead/token (unmerged)", "merges"])


def log_ticks(low: float, high: float) -> list[float] | None:
    """1-2-5 ticks across a log axis: plotly's own minor labels ("2 3 4 … 9") are hard to read.
    A narrow range gets every digit, or None (plotly's own ticks) where even that gives fewer than two."""
    for mantissas in ((1, 2, 5), tuple(range(1, 10))):
        ticks, decade = [], 10.0 ** math.floor(math.log10(max(low, 1e-12)))
        while decade <= high * 10:
            ticks += [m * decade for m in mantissas if low / 1.5 <= m * decade <= high * 1.5]
            decade *= 10
        if len(ticks) >= 2:
            return ticks
    return None


def label_positions(points: list[tuple[float, float, str]]) -> list[str]:
    """Put each label above, below or beside its marker, where it overlaps the labels placed before
    it least (nothing, where it can).

    Coordinates are log10 values scaled to the axes (0..1); a label is about 1.1% of the width per
    character and 9% of the height (the chart is about 1150 × 300 px)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    span = lambda v: (min(v), max(max(v) - min(v), 1e-9))  # noqa: E731
    (x0, dx), (y0, dy) = span(xs), span(ys)
    boxes, chosen = [], []

    def overlap(left, bottom, w, h):
        return sum(max(0.0, min(left + w, b[0] + b[2]) - max(left, b[0])) *
                   max(0.0, min(bottom + h, b[1] + b[3]) - max(bottom, b[1])) for b in boxes)

    for x, y, text in points:
        u, v, w, h = (x - x0) / dx, (y - y0) / dy, 0.011 * len(text), 0.09
        candidates = {"top center": (u - w / 2, v + 0.03), "bottom center": (u - w / 2, v - 0.03 - h),
                      "middle right": (u + 0.01, v - h / 2), "middle left": (u - 0.01 - w, v - h / 2)}
        name = min(candidates, key=lambda n: overlap(*candidates[n], w, h))  # ties: the first, top center
        boxes.append((*candidates[name], w, h))
        chosen.append(name)
    return chosen


def family_figure(results: list[calculator.CalcResult]) -> go.Figure:
    fig = go.Figure()
    points = [(max(x.trainable, 1), x.training.total_bytes / memory.GIB) for x in results]
    titles = [x.method_obj.title for x in results]
    positions = label_positions([(math.log10(px), math.log10(py), t) for (px, py), t in zip(points, titles)])
    for x, (px, py), title, position in zip(results, points, titles, positions):
        overhead = max(x.flops.inference_overhead_per_token_unmerged, 0)
        # Capped at one base forward: tuners that rebuild their weight every forward (OFT, HRA, BOFT unmerged) cost
        # many forwards' worth, and an uncapped marker covered the whole chart.
        share = min(overhead / max(x.flops.base_forward_per_token, 1), 1.0)
        fig.add_scatter(x=[px], y=[py], mode="markers+text", text=[title], textposition=position, name=title,
                        marker=dict(size=10 + 30 * share),
                        hovertemplate=(f"{title}<br>trainable %{{x:,}}<br>memory %{{y:.2f}} GiB"
                                       f"<br>inference overhead {human_number(overhead)} FLOPs/token<extra></extra>"))
    xt = log_ticks(min(p[0] for p in points), max(p[0] for p in points))
    yt = log_ticks(min(p[1] for p in points), max(p[1] for p in points))
    pad = lambda values, low, high: [math.log10(min(values)) - low, math.log10(max(values)) + high]  # noqa: E731
    xticks = {"tickvals": xt, "ticktext": [human_number(t) for t in xt]} if xt else {}
    yticks = {"tickvals": yt, "ticktext": [f"{t:.3g}" for t in yt]} if yt else {}
    fig.update_layout(xaxis=dict(type="log", title="trainable parameters (log)",
                                 range=pad([p[0] for p in points], 0.3, 0.3), **xticks),
                      yaxis=dict(type="log", title="training memory, GiB (log)",
                                 range=pad([p[1] for p in points], 0.12, 0.12), **yticks),
                      showlegend=False, height=380, margin=dict(l=40, r=10, t=30, b=40),
                      title="The whole family at these settings (marker size: unmerged inference overhead, largest at "
                            "one base forward or more)")
    return fig


def textbook_table() -> pd.DataFrame:
    """The textbook section's Llama-2-7B figures beside exact values (computed, not copied)."""
    rows = [[c.claim.what, f"≈{human_number(c.claim.claimed)} (claim)",
             f"{c.exact:,.0f} {'parameters' if c.claim.quantity == 'params' else 'FLOPs/token'}", f"{c.ratio:.3g}",
             c.claim.reason] for c in checked_claims()]
    return pd.DataFrame(rows, columns=["the textbook section's figure (Llama-2-7B)", "textbook says", "exact", "claim ÷ exact", "why"])
