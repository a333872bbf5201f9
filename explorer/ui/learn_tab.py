"""Learn tab: a card per method, two methods side by side, a decision helper, the composition experiment, one base
serving many adapters, learned mixtures, and a base model learning to follow a chat.

Numbers come from explorer.learn (the calculator), explorer.recommend and explorer.compose; this file only
turns widget values into those calls and formats what they return.
"""

from __future__ import annotations

import dataclasses
from html import escape

import gradio as gr
import pandas as pd

from ..human import human_bytes, human_number
from ..learn import cards as learn
from ..learn import recommend
from ..methods import DEFAULT_METHOD, METHODS
from .common import error_message, shows_errors
from .learn_chat import create_chat_section
from .learn_compose import create_compose_section
from .learn_mixture import create_mixture_section
from .learn_serving import create_serving_section
from .model_lists import model_choices
from .widgets import widget_for


def claims_html(claims: list[dict]) -> str:
    if not claims:
        return ""
    items = []
    for c in claims:
        unit = "parameters" if c["quantity"] == "params" else "FLOPs/token"
        items.append(f"<li>{escape(c['what'])}: the textbook section claims <i>≈{human_number(c['claimed'])}</i>; "
                     f"exact <b>{c['exact']:,.0f}</b> {unit} (claim ÷ exact = {c['ratio']:.3g}). "
                     f"{escape(c['reason'])}</li>")
    return f"<p><b>The textbook section's claims (on Llama-2-7B):</b></p><ul>{''.join(items)}</ul>"


def literature_html(claims) -> str:
    if not claims:
        return ""
    items = "".join(f"<li>{escape(c)}</li>" for c in claims)
    return f"<p><b>What the literature claims (claims, not measured here):</b></p><ul>{items}</ul>"


def card_html(card: dict, model: str) -> str:
    merge = escape(card["merge_summary"])
    if "error" in card:
        numbers = f"<p><i>{escape(card['error'])}</i></p>"
        svg = ""
    else:
        numbers = (f"<p class='card-numbers'><b>{card['trainable']:,}</b> trainable on {escape(model)} "
                   f"({card['trainable_percent']:.3g}%) · training memory {human_bytes(card['training_memory_bytes'])}"
                   f" (batch 4, 512 tokens, bf16, AdamW) · inference FLOP overhead "
                   f"{card['flop_overhead_unmerged_percent']:.3g}% unmerged, "
                   f"{card['flop_overhead_merged_percent']:.3g}% merged</p>")
        svg = f"<details><summary>Where it sits in a transformer block</summary><div class='card-svg'>{card['svg']}</div></details>"
    return (f"<div class='learn-card' data-method='{escape(card['method'])}'><h3>{escape(card['title'])}</h3>"
            f"<p><b>Where it adapts:</b> {escape(card['where'])}</p>{numbers}<p>{escape(card['explanation'])}</p>"
            f"<p><b>When to use:</b> {escape(card['when_to_use'])}</p><p>{merge}</p>{svg}"
            f"{claims_html(card['claims'])}{literature_html(card.get('literature'))}</div>")


@shows_errors()
def guide_html(model: str) -> str:
    cards = learn.guide(model, recommend_settings())
    return f"<div class='learn-cards' id='learn-cards-inner'>{''.join(card_html(c, model) for c in cards)}</div>"


def recommend_settings():
    from ..costs import memory

    return memory.TrainSettings(batch_size=4, seq_len=512, precision="bf16")


def side_by_side_table(model: str, a: str, b: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    result = learn.side_by_side(model, a, b, recommend_settings())
    cards = result["cards"]

    def row(label, fn):
        return [label] + [fn(cards[m]) if "error" not in cards[m] else cards[m]["error"] for m in (a, b)]

    table = pd.DataFrame([
        row("trainable parameters", lambda c: f"{c['trainable']:,} ({c['trainable_percent']:.3g}%)"),
        row("training memory (batch 4, 512 tokens, bf16)", lambda c: human_bytes(c["training_memory_bytes"])),
        row("inference FLOP overhead, unmerged", lambda c: f"{c['flop_overhead_unmerged_percent']:.3g}%"),
        row("inference FLOP overhead, merged", lambda c: f"{c['flop_overhead_merged_percent']:.3g}%"),
        ["merges?"] + [cards[m]["merge_summary"] for m in (a, b)],
    ], columns=["", METHODS[a].title, METHODS[b].title])
    run_rows = []
    for m in (a, b):
        for r in result["runs"][m]:
            score = (f"{r['task_score_base']:.2f} → {r['task_score_adapted']:.2f}"
                     if isinstance(r.get("task_score_adapted"), (int, float)) and
                     isinstance(r.get("task_score_base"), (int, float)) else "")
            loss = (f"{r['eval_loss_first']:.3f} → {r['eval_loss_last']:.3f}"
                    if isinstance(r.get("eval_loss_last"), (int, float)) else "")
            run_rows.append([METHODS[m].title, r["run_id"], r["model"], r["dataset"],
                             r["steps"], loss, score])
    runs_frame = pd.DataFrame(run_rows, columns=["method", "run", "model", "dataset", "steps",
                                                 "held-out loss", "task score base → adapted"])
    return table, runs_frame


def recommendation_markdown(rec: recommend.Recommendation) -> str:
    lines = [f"### Recommended: {escape(rec.title)}" + ("" if rec.fits else " (does not fit: see below)"),
             "Settings: " + (", ".join(f"`{k}={v}`" for k, v in rec.options.items()) or "defaults")]
    lines += [f"- {escape(reason)}" for reason in rec.reasons]
    if rec.runner_up:
        lines.append(f"\n**Runner-up: {escape(rec.runner_up.title)}**\n")
        lines += [f"- {escape(reason)}" for reason in rec.runner_up.reasons]
    if rec.chapter_note:
        lines.append(f"\n**Where the exact numbers change the textbook section's advice:** {escape(rec.chapter_note)}")
    if rec.try_it:
        lines.append(f"\n**{rec.try_it}**")  # our own text, with its commands in backticks
    return "\n".join(lines)


def update_versus(model_name, a, b):
    try:
        return side_by_side_table(model_name, a, b)
    except Exception as error:  # noqa: BLE001 - shown in the table's place
        return pd.DataFrame([[error_message(error)]], columns=["error"]), pd.DataFrame()


JOB_FIELDS = dataclasses.fields(recommend.Job)


def fill_scenario(name):
    """A scenario's job in the fields; "Describe your own job" puts every field back to its default, so no
    value of the previous scenario stays behind."""
    job = recommend.SCENARIOS[name].job if name else recommend.Job()
    return [getattr(job, f.name) for f in JOB_FIELDS]


@shows_errors()
def do_recommend(*values):
    job = recommend.Job.parse(dict(zip([f.name for f in JOB_FIELDS], values)))
    return recommendation_markdown(recommend.recommend(job))


def create_learn_tab() -> dict:
    gr.Markdown("The methods of the textbook section \"The PEFT family — adapters, prefix, IA³, prompt tuning\", "
                "with every number computed for the model you pick. "
                "Claims from the textbook section are shown beside the exact figures and labelled as claims.")
    model = gr.Dropdown(model_choices(catalog=True), value="llama-2-7b", label="Model for the cards and comparisons",
                        elem_id="learn-model")
    with gr.Accordion("Method guide: one card per method", open=True):
        cards = gr.HTML(guide_html("llama-2-7b"), elem_id="learn-cards")
    with gr.Accordion("Two methods side by side", open=True):
        with gr.Row():
            method_a = gr.Dropdown([(m.title, n) for n, m in METHODS.items()], value=DEFAULT_METHOD, label="Method A",
                                   elem_id="learn-a")
            method_b = gr.Dropdown([(m.title, n) for n, m in METHODS.items()], value="prompt", label="Method B",
                                   elem_id="learn-b")
        versus = gr.Dataframe(pd.DataFrame(columns=["", "A", "B"]), interactive=False, wrap=True, elem_id="learn-versus",
                              column_widths=["24%", "38%", "38%"])
        versus_runs = gr.Dataframe(pd.DataFrame(columns=["method", "run", "model", "dataset", "steps", "held-out loss",
                                                         "task score base → adapted"]),
                                   label="Last real runs of each (saved runs of the Fine-tune tab)",
                                   interactive=False, wrap=True)
    with gr.Accordion("Decision helper: which method for my job?", open=True):
        scenario = gr.Dropdown([("Describe your own job", "")] + [(s.summary.split(":")[0], name) for name, s in
                                                                 recommend.SCENARIOS.items()],
                               value="", label="Start from one of the textbook section's scenarios")
        fields = JOB_FIELDS
        job_widgets = []
        half = len(fields) // 2  # two rows: the model picker gets room for its label beside its arrow
        for row_fields in (fields[:half], fields[half:]):
            with gr.Row(elem_id="learn-job"):
                for f in row_fields:
                    if f.name == "model":
                        job_widgets.append(gr.Dropdown(model_choices(catalog=True), value=f.default, label="model",
                                                       info=f.metadata.get("help", ""), elem_id="learn-job-model",
                                                       allow_custom_value=True, scale=2, min_width=320))
                    else:  # (the model box also takes a config.json path)
                        job_widgets.append(widget_for(f, f"learn-job-{f.name}"))
        advise = gr.Button("Recommend", variant="primary", elem_id="learn-recommend")
        advice = gr.Markdown(elem_id="learn-advice")
    with gr.Accordion("Composition experiment: do two adapters interfere?", open=True):
        create_compose_section()
    with gr.Accordion("One base, many adapters: serve several fine-tunes in one batch", open=True):
        create_serving_section()
    with gr.Accordion("Learned mixtures: weights searched on a few examples (LoRAHub)", open=True):
        create_mixture_section()
    with gr.Accordion("A base model learns to follow a chat (Gemma 3 270M)", open=True):
        create_chat_section()

    model.change(guide_html, model, cards, api_visibility="private")
    for component in (model, method_a, method_b):
        component.change(update_versus, [model, method_a, method_b], [versus, versus_runs], api_visibility="private")
    scenario.change(fill_scenario, scenario, job_widgets, api_visibility="private")
    advise.click(do_recommend, job_widgets, advice, api_name="recommend")
    return {"versus": (update_versus, [model, method_a, method_b], [versus, versus_runs]),
            "models": [model, job_widgets[[f.name for f in fields].index("model")]]}


__all__ = ["create_learn_tab"]
