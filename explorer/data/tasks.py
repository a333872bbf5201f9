"""The four toy fine-tuning tasks and their automatic scores.

Standard library only. Each task has a bundled dataset under
explorer/data/datasets/<task>/{train,heldout}.jsonl (written by
explorer/data/datasets/build_datasets.py) and a deterministic scorer that turns one
model reply into a number in [0, 1].
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

DATASETS_DIR = Path(__file__).resolve().parent / "datasets"
SPLITS = ("train", "heldout")

# --------------------------------------------------------------------------- pirate

PIRATE_MARKERS = (
    "arr", "arrr", "ahoy", "aye", "avast", "matey", "mateys", "me hearty", "me hearties",
    "ye", "yer", "shiver me timbers", "booty", "landlubber", "landlubbers", "yo-ho", "scallywag",
)
_PIRATE_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(m) for m in sorted(PIRATE_MARKERS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)


def score_pirate(reply: str, reference: str = "") -> float:
    """Pirate style: 1.0 if the reply uses at least one pirate marker ("arr", "matey", "ye", ...), else 0.0.

    Only the style is checked, not whether the answer is correct; the reference is unused.
    """
    return 1.0 if _PIRATE_RE.search(reply) else 0.0


# --------------------------------------------------------------------------- french

FRENCH_WORDS = frozenset("""
le la les l' un une des du de d' au aux en et est sont ce c' cet cette ces il ils elle elles je j' tu
nous vous qui que qu' ne n' pas dans pour avec sur sous par mais ou où très se s' leur leurs notre
votre nos vos mon ton sa ses y oui non aussi bien être avoir ont était cela ça quand comme
deux trois quatre cinq sept huit neuf dix onze douze quinze vingt trente soixante cent mille
""".split())
# Left out of both lists because they are common in both languages: a, on, me, son, ma, plus, six.
ENGLISH_WORDS = frozenset("""
the an is are was were be been of to and in at it its this that these those for with from by
as or but not no you your he she they we i my our their his her there what which who how why when
where can will would should do does did have has had if so than then some any all very just about
into up out
""".split())
FRENCH_ACCENTS = set("àâçéèêëîïôûùüÿœæ")
_WORD_RE = re.compile(r"[^\W\d_]+['’]?")


def french_counts(text: str) -> tuple[int, int, int]:
    """Return (French function words, other accented words, English function words) in text."""
    french = accented = english = 0
    for token in _WORD_RE.findall(text.lower()):
        token = token.replace("’", "'")
        if token in FRENCH_WORDS:
            french += 1
        elif FRENCH_ACCENTS & set(token):
            accented += 1
        elif token.rstrip("'") in ENGLISH_WORDS:
            english += 1
    return french, accented, english


def score_french(reply: str, reference: str = "") -> float:
    """French share: 1.0 if the reply reads as French, else 0.0.

    Counts French function words ("le", "est", "dans", "l'"...) plus accented words,
    and English function words ("the", "is", "of"...). The reply is French when it has
    at least one French function word, at least two French signals in all, and more than
    twice as many French signals as English ones. The reference is unused.
    """
    french, accented, english = french_counts(reply)
    signals = french + accented
    return 1.0 if french >= 1 and signals >= 2 and signals > 2 * english else 0.0


# --------------------------------------------------------------------------- json_extract

JSON_FIELDS = ("name", "age", "city")


def first_json_object(text: str) -> dict | None:
    """Parse the first {...} JSON object found in text, or return None."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _same_field(key: str, got: object, want: object) -> bool:
    if key == "age":
        def as_int(v: object) -> int | None:
            if isinstance(v, bool):
                return None
            if isinstance(v, int):
                return v
            if isinstance(v, str) and v.strip().lstrip("-").isdigit():
                return int(v.strip())
            return None
        return as_int(got) is not None and as_int(got) == as_int(want)
    return isinstance(got, str) and isinstance(want, str) and got.strip() == want.strip()


def score_json(reply: str, reference: str) -> float:
    """JSON field match: share of the reference's fields (name, age, city) the reply gets exactly right.

    The first {...} object in the reply is parsed; age is compared as an integer, strings
    after stripping whitespace (case-sensitive). An unparseable reply scores 0.0.
    """
    want = first_json_object(reference)
    got = first_json_object(reply)
    if not want or got is None:
        return 0.0
    keys = [k for k in JSON_FIELDS if k in want] or list(want)
    return sum(_same_field(k, got.get(k), want[k]) for k in keys) / len(keys)


# --------------------------------------------------------------------------- sentiment


def score_sentiment(reply: str, reference: str) -> float:
    """Accuracy: 1.0 if the reply's first word (lower-cased, punctuation stripped) is the reference label."""
    words = reply.split()
    first = words[0].strip(string.punctuation + "“”‘’«»").lower() if words else ""
    return 1.0 if first and first == reference.strip().lower() else 0.0


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Task:
    """A toy fine-tuning task: its bundled data and how a reply is scored."""

    name: str
    title: str
    description: str
    score_name: str
    scorer: Callable[[str, str], float] = field(repr=False, compare=False)

    def score_one(self, reply: str, reference: str) -> float:
        """Score one model reply against its reference reply, in [0, 1]."""
        return float(self.scorer(reply, reference))

    def score(self, replies: list[str], references: list[str]) -> float:
        """Mean of score_one over paired replies and references (0.0 for no pairs)."""
        if len(replies) != len(references):
            raise ValueError(f"{len(replies)} replies but {len(references)} references")
        if not replies:
            return 0.0
        return sum(self.score_one(r, ref) for r, ref in zip(replies, references)) / len(replies)


TASKS: dict[str, Task] = {
    "pirate": Task(
        name="pirate",
        title="Talk like a pirate",
        description="Answer everyday questions correctly, but in pirate speak (\"Arr, matey!\").",
        score_name="pirate style share",
        scorer=score_pirate,
    ),
    "french": Task(
        name="french",
        title="Answer in French",
        description="Answer simple questions asked in English with a short, simple French sentence.",
        score_name="French share",
        scorer=score_french,
    ),
    "json_extract": Task(
        name="json_extract",
        title="Extract JSON",
        description="Read a sentence about a person and reply with only their name, age and city as one JSON object.",
        score_name="JSON field match",
        scorer=score_json,
    ),
    "sentiment": Task(
        name="sentiment",
        title="Label sentiment",
        description="Read a short product, movie or restaurant review and reply with one word: positive or negative.",
        score_name="accuracy",
        scorer=score_sentiment,
    ),
}


def load_examples(task_name: str, split: str) -> list[dict]:
    """Read one split ("train" or "heldout") of a task's bundled dataset as a list of {"messages": [...]}."""
    if task_name not in TASKS:
        raise ValueError(f"Unknown task {task_name!r}; choose one of {', '.join(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = DATASETS_DIR / task_name / f"{split}.jsonl"
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
