"""The forgetting probe: general questions with short known answers, asked of the base model and of a fine-tune.

A fine-tune on a small dataset can learn its style and lose general knowledge ("What is the capital of
Japan?" → "KASYUKI!"). The probe measures that: 80 questions written for this project (capitals, arithmetic,
colours, opposites, counts; explorer/data/datasets/probe/general.jsonl), scored automatically. The chapter
claims that LoRA's rank constraint protects against forgetting where full fine-tuning forgets on small data;
the race and Compare show whether this machine's runs bear it out.

Measured once when the set was written: SmolLM2-135M-Instruct (the bundled 4-bit-derived copy) answers 52 of
the 80 (0.65; greedy, 24 new tokens). What counts is the change after a fine-tune, not the base level.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

PROBE_FILE = Path(__file__).resolve().parent / "datasets" / "probe" / "general.jsonl"
CATEGORIES = ("capital", "arithmetic", "colour", "opposite", "count")
_NON_WORD = re.compile(r"[^0-9a-z]+")


@lru_cache(maxsize=1)
def questions() -> tuple[dict, ...]:
    """[{"question", "answers", "category"}] in a fixed order that mixes the categories."""
    rows = [json.loads(line) for line in PROBE_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_category = {c: [r for r in rows if r["category"] == c] for c in CATEGORIES}
    mixed = [row for group in zip(*by_category.values()) for row in group]  # one of each category in turn
    return tuple(mixed + [r for r in rows if r not in mixed])


def subset(count: int) -> list[dict]:
    """The first ``count`` questions: every category evenly represented."""
    return list(questions()[:max(0, count)])


def normalise(text: str) -> str:
    """Lower case, accents stripped, every run of other characters one space: "São Paulo!" -> "sao paulo"."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", text.casefold().replace("ß", "ss")).strip()


def score_reply(reply: str, answers: list[str]) -> float:
    """1.0 when an accepted answer occurs in the reply as whole words ("12" matches "= 12." but not "120"),
    else 0.0. Lenient on purpose: a reply naming several candidates counts if one is accepted."""
    haystack = f" {normalise(reply or '')} "
    return 1.0 if any(f" {needle} " in haystack for needle in map(normalise, answers) if needle) else 0.0
