"""Watch it learn, on the page: the watched questions' replies at step 0 and every few steps, one row per question.

Read from the run's log events alone (the "watch" plan and its "replies" snapshots, written by
explorer/train/timeline.py), so a reload or a second tab shows the same timeline. ``timeline_html`` is pure
(tests call it on hand-made events); ``create_timeline`` is the component the Fine-tune tab places.

For a class: large text, the data's own answer under each question, and in each reply the words that are new
since the column before it highlighted, so the change (plain answer → pirate) reads at a glance.
"""

from __future__ import annotations

import difflib
import html
import string
from dataclasses import dataclass

# Columns a 1280-px page shows side by side with readable replies; longer runs show step 0, the latest
# snapshot and evenly spaced ones between (the caption says how many are left out).
MAX_COLUMNS = 5
MARK = "background: rgba(255, 196, 0, 0.45); color: inherit; padding: 0 0.1em; border-radius: 0.2em;"
CUT_MARK = "<span title='cut: the reply reached its token budget' style='opacity: 0.6'> …</span>"
CELL = "border: 1px solid rgba(128, 128, 128, 0.35); padding: 0.5em; vertical-align: top; overflow-wrap: anywhere;"


@dataclass
class Timeline:
    questions: list[str]
    references: list[str]
    planned: list[int]                       # the steps the run will answer at
    every: int | None                        # steps between snapshots
    snapshots: list[tuple[int, list[str]]]   # (step, replies) in step order
    cut: list[list[bool]]                    # per snapshot, per reply: the token budget ended it
    seconds: list[float]                     # each snapshot's generation time, measured
    new_tokens: int | None


def read_timeline(events: list[dict]) -> Timeline | None:
    """The run's timeline from its log events; None when the run logged no watch (off, or a head run)."""
    plan = next((e for e in events if e.get("event") == "watch"), None)
    if plan is None:
        return None
    by_step = {e["step"]: e for e in events if e.get("event") == "replies"}  # a step logged twice: the last
    ordered = [by_step[s] for s in sorted(by_step)]
    return Timeline(list(plan.get("questions", [])), list(plan.get("references", [])), list(plan.get("steps", [])),
                    plan.get("every"), [(e["step"], list(e.get("replies", []))) for e in ordered],
                    [list(e.get("cut", [])) for e in ordered],
                    [float(e.get("seconds", 0.0)) for e in ordered], plan.get("new_tokens"))


def shown_columns(steps: list[int], limit: int = MAX_COLUMNS) -> list[int]:
    """Indices of the snapshots to show: all when they fit, else the first, the last and evenly spaced ones."""
    if len(steps) <= limit:
        return list(range(len(steps)))
    last = len(steps) - 1
    return sorted({round(i * last / (limit - 1)) for i in range(limit)})


def word_key(word: str) -> str:
    """What a word is compared by: "The" and "the," are the same word; "be" and "is" are not."""
    return word.casefold().strip(string.punctuation) or word


def marked_reply(reply: str, before: str | None) -> str:
    """The reply as HTML, its words that are not in ``before`` (the column to its left) highlighted; case and
    punctuation around a word do not count as a change."""
    words = reply.split()
    if not words:
        return "<em style='opacity: 0.6'>(no reply: the model ended at once)</em>"
    if before is None:
        return html.escape(reply)
    if reply == before:
        return f"<span style='opacity: 0.55'>{html.escape(reply)}</span> <small style='opacity: 0.7'>(same)</small>"
    matcher = difflib.SequenceMatcher(a=[word_key(w) for w in before.split()], b=[word_key(w) for w in words],
                                      autojunk=False)
    parts = []
    for tag, _, _, start, end in matcher.get_opcodes():
        text = html.escape(" ".join(words[start:end]))
        if not text:
            continue  # a deletion: nothing of the new reply to show
        parts.append(text if tag == "equal" else f"<mark style='{MARK}'>{text}</mark>")
    return " ".join(parts)


def step_label(step: int, steps: list[int]) -> str:
    if step == 0:
        return "Step 0<br><small>before training</small>"
    if steps and step == steps[-1]:
        return f"Step {step}<br><small>the end</small>"
    return f"Step {step}"


def change_sentence(timeline: Timeline) -> str:
    """How many replies differ from step 0's, computed from the snapshots."""
    if len(timeline.snapshots) < 2 or timeline.snapshots[0][0] != 0:
        return ""
    first, (step, latest) = timeline.snapshots[0][1], timeline.snapshots[-1]
    changed = sum(a != b for a, b in zip(first, latest))
    total = min(len(first), len(latest))
    if changed == 0:
        return f"By step {step} no reply has changed yet."
    return f"By step {step}, {changed} of {total} replies differ from the model's answers before training."


def timeline_html(events: list[dict], finished: bool = False) -> str:
    """The timeline as an HTML table (one row per question, a column per snapshot), or "" when the run logged
    no watch. While the run trains (``finished`` False) the next planned snapshot shows as a waiting column."""
    timeline = read_timeline(events)
    if timeline is None or not timeline.questions:
        return ""
    steps = [step for step, _ in timeline.snapshots]
    columns = shown_columns(steps)
    waiting = None
    if not finished:
        waiting = next((s for s in timeline.planned if not steps or s > steps[-1]), None)
    every = timeline.every
    when = (f"at step 0 (before training), every {every} steps and at the end" if every and len(timeline.planned) > 1
            else "at step 0 (before training)")
    budget = f", up to {timeline.new_tokens} new tokens" if timeline.new_tokens else ""
    lines = ["<div id='watch-timeline-body' style='font-size: 1.15rem; line-height: 1.45;'>",
             f"<p><strong>Watch it learn:</strong> the same {len(timeline.questions)} held-out questions, answered "
             f"{when} (greedy{budget}). <mark style='{MARK}'>Highlighted</mark> words are new since the column "
             "before; … marks a reply cut at the token budget.</p>",
             "<table style='width: 100%; border-collapse: collapse; table-layout: fixed;'>",
             f"<thead><tr><th style='{CELL} width: 22%; text-align: left;'>Question</th>"]
    lines += [f"<th style='{CELL} text-align: left;'>{step_label(steps[i], timeline.planned)}</th>" for i in columns]
    if waiting is not None:
        lines.append(f"<th style='{CELL} text-align: left; opacity: 0.6;'>Step {waiting}</th>")
    lines.append("</tr></thead><tbody>")
    for row, question in enumerate(timeline.questions):
        reference = timeline.references[row] if row < len(timeline.references) else ""
        cells = [f"<td style='{CELL}'><strong>{html.escape(question)}</strong>"
                 + (f"<br><small style='opacity: 0.75'>The data's answer: {html.escape(reference)}</small>"
                    if reference else "") + "</td>"]
        before = None
        for i in columns:
            replies, cut = timeline.snapshots[i][1], timeline.cut[i]
            reply = replies[row] if row < len(replies) else ""
            more = CUT_MARK if row < len(cut) and cut[row] and reply else ""
            cells.append(f"<td style='{CELL}'>{marked_reply(reply, before)}{more}</td>")
            before = reply
        if waiting is not None:
            cells.append(f"<td style='{CELL} opacity: 0.6;'><em>answering at step {waiting}…</em></td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    notes = [change_sentence(timeline)]
    if len(columns) < len(steps):
        notes.append(f"Showing {len(columns)} of {len(steps)} snapshots (the first, the latest and evenly "
                     "spaced ones).")
    if timeline.seconds:
        notes.append(f"Each snapshot took {sum(timeline.seconds) / len(timeline.seconds):.1f} s to answer "
                     f"(measured; {sum(timeline.seconds):.1f} s in all, outside the training steps' time).")
    lines.append(f"<p style='font-size: 0.95rem; opacity: 0.85;'>{' '.join(n for n in notes if n)}</p></div>")
    return "\n".join(lines)


def create_timeline():
    """The Fine-tune tab's timeline component (empty until a run logs its watch)."""
    import gradio as gr

    return gr.HTML(elem_id="ft-timeline")
