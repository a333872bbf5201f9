"""Compare tab: a saved run's base, adapted and merged models side by side.

Four buttons, each quick on its own: outputs (with merge fidelity), measured latency, the held-out
evaluation, and export of the merged model. All numbers come from explorer.compare.
"""

from __future__ import annotations

import html

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import learned
from ..compare import export
from ..compare import variants as compare
from ..errors import ExplorerError
from ..train import runs
from . import head_view
from .compare_dial import create_dial
from .common import api_errors, shows_errors
from .widgets import named_slider

COLUMN_TITLES = {"base": "Base model", "adapted": "Adapted (adapter active, unmerged)",
                 "merged": "Merged (adapter folded into the weights)"}


def run_choices() -> list[tuple[str, str]]:
    """Runs with a saved adapter, newest first, labelled so a newcomer recognises them."""
    choices = []
    for run in runs.list_runs():
        if not run.has_adapter or run.config is None:
            continue
        score = run.summary.get("task_score_adapted")
        label = (f"{run.run_id} · {run.config.method} · {run.config.model} · {run.dataset_label}" +
                 (f" · score {score:.2f}" if isinstance(score, (int, float)) else ""))
        choices.append((label, run.run_id))
    return choices


@shows_errors()
def describe_run(run_id: str) -> str:
    if not run_id:
        return "No finished run yet: train one in the **Fine-tune** tab (about two minutes on the bundled model)."
    run = runs.open_run(run_id)
    merge = html.escape(run.method.merge_summary)
    return (f"**{html.escape(run.method.title)}** on `{html.escape(run.config.model)}`, dataset "
            f"`{html.escape(run.dataset_label)}`, {run.summary.get('steps', '?')} steps. "
            f"{merge}")


def _cell(pieces, text: str | None, reason: str | None) -> str:
    if text is None:
        return f'<td class="cmp-none">{html.escape(reason or "")}</td>'
    if pieces is None:
        return f"<td>{html.escape(text)}</td>"
    body = "".join(f"<mark>{html.escape(t)}</mark>" if changed and t.strip() else html.escape(t)
                   for t, changed in pieces)
    return f"<td>{body}</td>"


def columns_html(result: dict) -> str:
    """One row per prompt, one column per variant; tokens that differ from the base are highlighted.
    Every piece of model or user text is escaped: outputs show as text, never as markup. A classifier or
    embedding run gets its own table: each text with its true label and each model's answer."""
    if result.get("kind"):
        return head_view.labels_html(result)
    head = "".join(f"<th>{COLUMN_TITLES[v]}</th>" for v in compare.VARIANTS)
    rows = []
    for i, prompt in enumerate(result["prompts"]):
        texts, pieces = result["outputs_per_prompt"], result["pieces"]
        cells = [_cell(None, texts["base"][i], None)]
        for v in ("adapted", "merged"):
            cells.append(_cell(pieces[v][i] if pieces[v] else None, texts[v][i] if texts[v] else None,
                               result["not_mergeable_reason"]))
        rows.append(f'<tr><td colspan="3" class="cmp-prompt">Prompt: {html.escape(prompt)}</td></tr>'
                    f"<tr>{''.join(cells)}</tr>")
    return (f'<table class="cmp-table" id="compare-columns"><tr>{head}</tr>{"".join(rows)}</table>'
            f'<p class="cmp-legend"><mark>highlighted</mark> tokens differ from the base model\'s reply '
            f"({html.escape(result['decoding'])}).</p>")


def fidelity_text(result: dict) -> str:
    if result["not_mergeable_reason"]:
        return f"**Merge fidelity:** not applicable. {html.escape(result['not_mergeable_reason'])}"
    if result.get("kind"):
        return ("**Merge fidelity:** nothing to merge: the head is a new layer on the frozen backbone, so there is "
                "no adapter to fold into the weights.")
    if result["nothing_to_merge"]:
        return ("**Merge fidelity:** nothing to merge: this method trains a plain model, so the merged column is "
                "the adapted model itself (difference 0).")
    diff, match = result["max_abs_logit_diff_adapted_vs_merged"], result["greedy_match"]
    lines = [f"**Merge fidelity:** the largest difference between the adapted and merged logits over the prompts "
             f"and replies is **{diff:.3g}**; greedy outputs {'**match**' if match else '**differ**'}."]
    four = result["fidelity"].get("merge_into_4bit")
    if four:
        lines.append(f"QLoRA: the adapted model runs bitsandbytes' 4-bit kernels while the merged model uses "
                     f"float weights, so part of that difference is the kernels' precision. {four['explanation']} "
                     f"Merged into 4-bit: logit difference {four['max_abs_logit_diff']:.3g}, greedy outputs "
                     f"{'match' if four['greedy_match'] else 'differ'}.")
    return "\n\n".join(lines)


def cost_text(cost: dict) -> str:
    lat, tps = cost["latency_ms_per_token"], cost["tokens_per_second"]
    over, flops = cost["latency_overhead_percent"], cost["flop_overhead_percent"]
    rows = ["| | ms per token | tokens/s | measured overhead | Calculator FLOP overhead |", "|---|---|---|---|---|"]
    for v in compare.VARIANTS:
        if lat.get(v) is None:
            rows.append(f"| {v} | — | — | cannot merge | — |")
            continue
        measured = "—" if v == "base" else f"{over[v]:+.1f}%"
        flop = "0%" if v == "base" else ("—" if flops.get(v) is None else f"{flops[v]:+.2f}%")
        rows.append(f"| {v} | {lat[v]:.2f} | {tps[v]:.1f} | {measured} | {flop} |")
    return ("\n".join(rows) + f"\n\nMedian of {cost['repeats']} runs of {cost['new_tokens']} generated tokens on "
            f"{cost['device']}, after a warm-up; the three are timed in turn. The textbook claims adapters add "
            "5-10% latency; this is what this machine measures. FLOPs are not time: small matrices and extra "
            "kernel launches cost more time than their FLOPs suggest.")


def heldout_figure(result: dict) -> go.Figure:
    probed = any(v is not None for v in result.get("probe_score", {}).values())
    titles = ["task score (higher is better)", "held-out loss (lower is better)"]
    if probed:
        titles.append("forgetting probe: general questions answered")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    names = [v for v in compare.VARIANTS if result["heldout_loss"].get(v) is not None]
    colors = [{"base": "#9e9e9e", "adapted": "#1f77b4", "merged": "#2ca02c"}[n] for n in names]
    scores = [result["task_score"].get(v) for v in names]
    if any(s is not None for s in scores):
        fig.add_bar(x=names, y=scores, marker_color=colors, row=1, col=1, showlegend=False)
    else:
        fig.add_annotation(text="no task score for this data", showarrow=False, row=1, col=1, x=0.5, y=0.5,
                           xref="x domain", yref="y domain")
    fig.add_bar(x=names, y=[result["heldout_loss"][v] for v in names], marker_color=colors, row=1, col=2,
                showlegend=False)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    if probed:
        fig.add_bar(x=names, y=[result["probe_score"][v] for v in names], marker_color=colors, row=1, col=3,
                    showlegend=False)
        fig.update_yaxes(range=[0, 1.05], row=1, col=3)
    fig.update_layout(height=320, margin=dict(l=40, r=10, t=70, b=30))  # room above the titles for the toolbar
    return fig


def heldout_text(result: dict) -> str:
    score = result["task_score"]
    parts = [f"{result['examples']} held-out examples"]
    if result["task"]:
        parts.append(f"task score ({result['task']}): " + ", ".join(
            f"{v} {score[v]:.2f}" for v in compare.VARIANTS if score.get(v) is not None))
    else:
        parts.append("uploaded data has no automatic task score; the loss is shown")
    parts.append("held-out loss: " + ", ".join(f"{v} {loss:.3f}" for v, loss in result["heldout_loss"].items()
                                                if loss is not None))
    probed = {v: s for v, s in result.get("probe_score", {}).items() if s is not None}
    if probed:
        parts.append(f"forgetting probe ({result['probe_examples']} general questions): " +
                     ", ".join(f"{v} {s:.2f}" for v, s in probed.items()))
    return "; ".join(parts) + "." + forgetting_text(result)


def forgetting_text(result: dict) -> str:
    """The forgetting probe in a sentence, from its counts (explorer.learned.forgetting_sentence)."""
    right, asked = result.get("probe_right") or {}, result.get("probe_examples") or 0
    if not asked or right.get("base") is None or right.get("adapted") is None:
        return ""
    sentence = learned.forgetting_sentence(right["base"], right["adapted"], asked, "The fine-tune")
    if right.get("merged") is not None and right["merged"] != right["adapted"]:
        sentence += f" Merged, it answers {right['merged']} of {asked}."
    return "\n\n" + sentence


def refresh_runs(current):
    choices = run_choices()
    ids = [value for _, value in choices]
    value = current if current in ids else (ids[0] if ids else None)
    return gr.Dropdown(choices=choices, value=value), describe_run(value or "")


def require_run(run_id: str) -> str:
    if not run_id:
        raise ExplorerError("Choose a run first (train one in the Fine-tune tab).")
    return run_id


@shows_errors(outputs=2, at=1)
def fill_heldout(run_id):
    return "\n".join(compare.heldout_prompts(require_run(run_id), 4)), gr.skip()


@shows_errors(outputs=2, at=1, blank={0: ""})
def do_compare(run_id, text, tokens, temp, seed_value, strength=1.0):
    result = compare.run_comparison(require_run(run_id), text, tokens, temperature=float(temp or 0),
                                    seed=int(seed_value or 0), measure_latency=False, strength=float(strength))
    note = ("" if result["strength"] == 1 else
            f"\n\n**Adapter strength {result['strength']:g}:** the adapted column is W + {result['strength']:g}·ΔW "
            "(0 = the base, above 1 extrapolates along the update); the merged column and the fidelity stay at 1.")
    return columns_html(result), fidelity_text(result) + note


@shows_errors()
def do_latency(run_id, text):
    first = compare.check_prompts(text)[0]
    return cost_text(compare.measure_cost(require_run(run_id), first))


@shows_errors(outputs=2, blank={1: gr.Plot(visible=False)})
def do_heldout(run_id, count, probe_questions):
    result = compare.evaluate_heldout(require_run(run_id), int(count), int(probe_questions or 0))
    return heldout_text(result), gr.Plot(heldout_figure(result), visible=True)


@shows_errors(outputs=2, at=1, blank={0: None})
def do_export(run_id):
    folder = export.export_merged(require_run(run_id))
    archive = export.zip_export(folder)
    return (str(archive), f"Saved the merged model in `{folder}`: it is now a model of the registry "
            f"(named `{folder.name}`) in the Models and Fine-tune tabs, and transformers loads it with "
            "`AutoModelForCausalLM.from_pretrained(folder)`.")


@api_errors
def compare_api(run_id: str, prompts_text: str, max_new_tokens: int = 32) -> dict:
    """Compare as an API: the three outputs and the merge fidelity as JSON (errors as {"error": text})."""
    result = compare.run_comparison(run_id, prompts_text, max_new_tokens, measure_latency=False)
    return {k: v for k, v in result.items() if k != "pieces"}


def create_compare_tab() -> dict:
    gr.Markdown("Did the fine-tune do anything, and what does merging change? Pick a saved run, give prompts, "
                "and compare the base, adapted and merged models. (Several LoRA runs on one base: the Learn tab's "
                "*One base, many adapters* answers them all in one batch.)")
    with gr.Row():
        run = gr.Dropdown(run_choices(), label="Run", info="Runs of the Fine-tune tab that saved an adapter",
                          scale=4, elem_id="compare-run")
        refresh = gr.Button("Refresh runs", scale=1)
    info = gr.Markdown(describe_run(""))
    with gr.Row():
        prompts = gr.Textbox(label="Prompts (one per line)", lines=3, scale=4, elem_id="compare-prompts")
        with gr.Column(scale=2):
            max_tokens = named_slider(1, 256, value=32, step=1, label="max new tokens")
            temperature = gr.Number(0, label="temperature", minimum=0, maximum=5,
                                    info="0 = greedy (reproducible); above 0 samples with the seed")
            seed = gr.Number(0, label="seed", precision=0, minimum=0)
            strength = named_slider(-1, 3, value=1, step=0.1, label="adapter strength", elem_id="compare-strength",
                                    info="Scales a LoRA update (PEFT's scaling): 0 = base, 1 = trained, >1 extrapolated")
    with gr.Row():
        use_heldout = gr.Button("Use held-out prompts")
        go_button = gr.Button("Compare", variant="primary", elem_id="compare-go")
    columns = gr.HTML(elem_id="compare-output")
    fidelity = gr.Markdown(elem_id="compare-fidelity")
    with gr.Row():
        latency_button = gr.Button("Measure latency")
        examples = named_slider(1, 64, value=8, step=1, label="held-out examples")
        probe_questions = named_slider(0, 80, value=10, step=1, label="forgetting probe questions",
                                       elem_id="compare-probe",
                                       info="General questions (capitals, arithmetic...): did the fine-tune forget?")
        heldout_button = gr.Button("Evaluate on held-out set")
    cost = gr.Markdown()
    heldout_summary = gr.Markdown(elem_id="compare-heldout")
    chart = gr.Plot(visible=False)
    with gr.Row():
        export_button = gr.Button("Export merged model to models_cache")
        download = gr.File(label="Merged model (zip)", interactive=False)
    export_status = gr.Markdown()
    create_dial(run)

    refresh.click(refresh_runs, run, [run, info], api_visibility="private")
    run.change(describe_run, run, info, api_visibility="private")
    use_heldout.click(fill_heldout, run, [prompts, info], api_visibility="private")
    go_button.click(do_compare, [run, prompts, max_tokens, temperature, seed, strength], [columns, fidelity],
                    api_visibility="private")
    strength.release(do_compare, [run, prompts, max_tokens, temperature, seed, strength], [columns, fidelity],
                     api_visibility="private")
    latency_button.click(do_latency, [run, prompts], cost, api_visibility="private")
    heldout_button.click(do_heldout, [run, examples, probe_questions], [heldout_summary, chart],
                         api_visibility="private")
    export_button.click(do_export, run, [download, export_status], api_visibility="private")
    gr.api(compare_api, api_name="compare")
    return {"run": run, "info": info, "refresh": refresh_runs}
