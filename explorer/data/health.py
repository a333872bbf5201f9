"""Data health before training, in plain words: how the rows split into training and held out, repeated rows,
held-out rows that also occur in training, rows longer than the sequence length (cut), and too few rows to
learn a pattern from. Every sentence is computed from the rows; nothing here trains or imports gradio.

A file of the wrong kind for the method never reaches these checks: explorer.data.uploads refuses it in one
line that names the method that takes it (explorer.data.shapes.wrong_kind).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import chat

# Below this many training rows a short fine-tune mostly memorises them: each one is seen many times per run
# (20 steps of batch 4 see 80 examples) and there is too little to generalise from.
FEW_ROWS = 10
MAX_LINES_SHOWN = 5
SHAPE_NEEDS = {"chat": "chat training needs at least 2 rows, one of them held out",
               "labelled": "a head needs at least 4 rows, 2 of them held out",
               "pairs": "a head needs at least 4 rows, 2 of them held out"}
SPLIT_WORDS = {"chat": "the last 10% of the rows, 1 to 50", "labelled": "the last fifth, 2 to 200",
               "pairs": "the last fifth, 2 to 200"}


@dataclass
class Health:
    """What the checks found; ``sentences`` says it in words."""

    kind: str
    train: int
    heldout: int
    repeated_lines: list[int] = field(default_factory=list)   # rows that repeat an earlier row
    leaked: int = 0                                           # held-out rows that also occur in training
    too_long: int | None = None                               # training rows over seq_len tokens (None: not measured)
    reply_lost: int = 0                                       # ... of which the whole reply is cut
    seq_len: int | None = None


def _normal(value):
    if isinstance(value, str):
        return " ".join(value.lower().split())
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    return [_normal(item) for item in value] if isinstance(value, list) else value


def _key(row: dict) -> str:
    """A row as text for comparison, ignoring case and spacing."""
    return json.dumps(_normal(row), ensure_ascii=False, sort_keys=True)


def check(train: list[dict], heldout: list[dict], kind: str = "chat", lines: list[int] | None = None) -> Health:
    """Repeats and held-out rows seen in training; ``lines``: the file's line of each row (train then held out)."""
    rows = train + heldout
    lines = lines if lines and len(lines) == len(rows) else list(range(1, len(rows) + 1))
    seen, repeated = set(), []
    for line, row in zip(lines, rows):
        key = _key(row)
        if key in seen:
            repeated.append(line)
        seen.add(key)
    trained = {_key(row) for row in train}
    return Health(kind, len(train), len(heldout), repeated, sum(_key(row) in trained for row in heldout))


def measure_lengths(health: Health, tokenizer, train: list[dict], seq_len: int) -> Health:
    """Count the chat training rows longer than ``seq_len`` tokens as training encodes them (the model's chat
    template, explorer.data.chat), and those whose whole reply would be cut (training skips them)."""
    too_long = lost = 0
    for row in train:
        encoded = chat.encode_example(tokenizer, row["messages"], seq_len)
        too_long += encoded.truncated
        lost += all(label == -100 for label in encoded.labels)
    health.too_long, health.reply_lost, health.seq_len = too_long, lost, seq_len
    return health


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:MAX_LINES_SHOWN])
    return f"line{'' if len(lines) == 1 else 's'} {shown}" + (" …" if len(lines) > MAX_LINES_SHOWN else "")


def sentences(health: Health) -> list[str]:
    """The findings as sentences, the split first; warnings follow only when there is something to say,
    except the length check, which says either way once it was measured."""
    said = [f"{_plural(health.train, 'row')} for training and {health.heldout:,} held out to measure the result "
            f"({SPLIT_WORDS[health.kind]})."]
    if health.train == 0:
        said.append(f"No row is left to train on: {SHAPE_NEEDS[health.kind]}.")
    elif health.train < FEW_ROWS:
        it = "it" if health.train == 1 else "them"
        said.append(f"Only {_plural(health.train, 'training row')}: the model will mostly memorise {it} rather "
                    f"than learn a pattern. Add rows ({FEW_ROWS} at least) for a fairer picture.")
    if health.repeated_lines:
        n = len(health.repeated_lines)
        said.append(f"{_plural(n, 'row')} repeat{'s' if n == 1 else ''} an earlier row ({_lines(health.repeated_lines)}"
                    "; case and spacing ignored): each repeat is trained on again, so it weighs more.")
    if health.leaked:
        said.append(f"{_plural(health.leaked, 'held-out row')} also occur{'s' if health.leaked == 1 else ''} in "
                    "training: the held-out result will look better than what the model learned.")
    if health.too_long is not None:
        if health.too_long:
            lost = (f"; {_plural(health.reply_lost, 'row')} lose{'s' if health.reply_lost == 1 else ''} the whole "
                    "reply and will be skipped") if health.reply_lost else ""
            are = "is" if health.too_long == 1 else "are"
            said.append(f"{health.too_long:,} of {_plural(health.train, 'training row')} {are} longer than the "
                        f"sequence length ({health.seq_len} tokens): they will be cut at {health.seq_len} tokens, and "
                        f"the end of their reply is not learned{lost}. A larger seq_len (Advanced) keeps them whole.")
        else:
            said.append(f"Every training row fits in the sequence length ({health.seq_len} tokens).")
    return said
