"""Datasets for feature extraction: labelled text (a classifier head) and paraphrase pairs (an embedding head).

Two row kinds beside the chat rows of explorer.data.uploads, uploaded (any format explorer.data.tables reads;
column names compared case-insensitively, or given as a mapping such as text=Sentence,label=Topic) or bundled:
    labelled  {"text": ..., "label": ...}   (columns text,label)   e.g. the bundled "topics"
    pairs     {"a": ..., "b": ...}          (columns a,b, or sentence1,sentence2, or anchor,positive; b paraphrases
                                             a)   e.g. the bundled "paraphrases"
Every unusable row is reported with its line and reason (missing label, empty text, ...); a labelled set with
only one class is refused as a whole, naming that class. The bundled sets were written for this project
(explorer/data/datasets/{topics,paraphrases}/, README.md there says how they were checked).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from . import shapes, tables
from .tasks import DATASETS_DIR
from .uploads import MAX_FIELD_CHARS, FlatFormat, ParsedData, parse_upload

MAX_LABEL_CHARS = 100
MAX_CLASSES = 100


def _text(value, name: str) -> str:
    if value is None:
        raise ValueError(f'missing field "{name}"')
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f'"{name}" must be text, not {type(value).__name__}')
    text = str(value)
    if not text.strip():
        raise ValueError(f'"{name}" is empty')
    if len(text) > MAX_FIELD_CHARS:
        raise ValueError(f'"{name}" is {len(text):,} characters (limit {MAX_FIELD_CHARS:,})')
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a JSON "\ud800" escape
        raise ValueError(f'"{name}" has an invalid character at position {exc.start} (a lone surrogate)') from None
    return text


def _labelled_row(fields: dict) -> dict:
    text, label = _text(fields["text"], "text"), _text(fields["label"], "label").strip()
    if len(label) > MAX_LABEL_CHARS:
        raise ValueError(f'"label" is {len(label)} characters; a class name has at most {MAX_LABEL_CHARS}')
    return {"text": text, "label": label}


def _pair_row(fields: dict) -> dict:
    a, b = _text(fields["a"], "a"), _text(fields["b"], "b")
    if " ".join(a.lower().split()) == " ".join(b.lower().split()):
        raise ValueError('"b" repeats "a" instead of paraphrasing it')
    return {"a": a, "b": b}


LABELLED = FlatFormat("labelled", ("text", "label"), _labelled_row)
PAIRS = FlatFormat("pairs", ("a", "b"), _pair_row)
FORMATS = {"labelled": LABELLED, "pairs": PAIRS}


@dataclass(frozen=True)
class BundledSet:
    name: str
    kind: str            # "labelled" or "pairs"
    title: str
    description: str


BUNDLED: dict[str, BundledSet] = {
    "topics": BundledSet("topics", "labelled", "Topic of a sentence",
                         "Classify a short sentence as sports, cooking, weather or technology (176 training and 56 "
                         "held-out sentences, balanced). Metrics: accuracy and macro-F1 against the majority class."),
    "paraphrases": BundledSet("paraphrases", "pairs", "Paraphrase pairs",
                              "Pairs of sentences with the same meaning in other words (162 training and 48 held-out "
                              "pairs). Metric: recall@1, each held-out a must find its b among all held-out b's."),
}


def check_classes(rows: list[dict], source: str) -> list[str]:
    """The sorted class names of labelled rows; refuse one class only (nothing to tell apart) or too many."""
    labels = sorted({row["label"] for row in rows})
    if len(labels) < 2:
        raise ExplorerError(f"{source}: every row has the label {labels[0]!r}; a classifier needs at least 2 "
                            "classes.")
    if len(labels) > MAX_CLASSES:
        raise ExplorerError(f"{source} has {len(labels)} different labels; the classifier head takes at most "
                            f"{MAX_CLASSES}. Is the label column the text?")
    return labels


def parse(data: bytes, filename: str, kind: str, columns: str | dict | None = None) -> ParsedData:
    """An uploaded file of labelled rows or pairs, checked row by row (and, for labels, as a whole)."""
    parsed = parse_upload(data, filename, FORMATS[kind], columns)
    if kind == "labelled":
        check_classes(parsed.rows, parsed.source)
    return parsed


def read_bundled(name: str, split: str) -> list[dict]:
    path = DATASETS_DIR / name / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load(dataset: str, kind: str) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) of a bundled set or an uploaded file of this kind.

    An upload keeps its order and holds out its last fifth (2 to 200 rows), so reruns match; every class a
    held-out row has must also occur in training."""
    if dataset in BUNDLED:
        return read_bundled(dataset, "train"), read_bundled(dataset, "heldout")
    path = Path(dataset)
    limit = settings.max_upload_bytes()
    if path.stat().st_size > limit:
        raise ExplorerError(f"{path.name} is larger than {limit:,} bytes (EXPLORER_MAX_UPLOAD_MB).")
    rows = parse(path.read_bytes(), path.name, kind).rows
    if len(rows) < 4:
        raise ExplorerError(f"{path.name} has {len(rows)} valid rows; feature extraction needs at least 4 (some "
                            "to train on, at least 2 held out).")
    train, heldout = split(rows)
    held = len(heldout)
    if kind == "labelled":
        check_classes(train, f"{path.name} (its training part, all but the last {held} rows)")
        unseen = sorted({r["label"] for r in heldout} - {r["label"] for r in train})
        if unseen:
            raise ExplorerError(f"{path.name}: the label {unseen[0]!r} occurs only in the held-out rows (the last "
                                f"{held}); mix the rows so every class occurs in both parts.")
    return train, heldout


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """An upload's (train, held out): its last fifth, 2 to 200 rows, held out (order kept, so reruns match)."""
    held = max(2, min(200, len(rows) // 5))
    return rows[:-held], rows[-held:]


def sniff_kind(path: Path) -> str:
    """The kind of rows a file holds, from its columns (explorer.data.shapes): "labelled" (text, label),
    "pairs" (a, b), else "chat" (whose own parser then reports anything else row by row)."""
    try:
        if Path(path).stat().st_size > settings.max_upload_bytes():
            return "chat"  # not read: the loader refuses it in its own words
        table = tables.read_bytes(Path(path).read_bytes(), Path(path).name)
    except (OSError, ExplorerError):
        return "chat"
    found = shapes.recognise(table.columns, "chat")
    return found[0] if found else "chat"
