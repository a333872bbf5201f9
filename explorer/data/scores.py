"""Scores a user picks for uploaded chat data, which has no task of its own: each compares a model's reply with
the reference reply of the held-out row and gives a number in [0, 1].

    exact      the reply equals the reference (case, spacing and end punctuation ignored)
    contains   the reply contains the reference
    token_f1   the F1 of the two bags of words (SQuAD's answer score: Rajpurkar et al. 2016, §3)
    regex:P    the reply matches the regular expression P (searched anywhere, case-insensitive)

A bundled task's own score always wins; an upload without a chosen score gets held-out loss only.
"""

from __future__ import annotations

import re
from collections import Counter

from ..errors import ExplorerError
from .tasks import TASKS, Task

CHOICES = ("exact", "contains", "token_f1", "regex:")
MAX_PATTERN = 200
# A quantified group that is itself quantified, e.g. (a+)+ or (x*)*: patterns that can backtrack for longer
# than a training run lasts on a reply of a few dozen characters.
NESTED_QUANTIFIERS = re.compile(r"\((?:[^()\\]|\\.)*[+*}]\)\s*[+*{]")


def _normal(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!?")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def exact(reply: str, reference: str) -> float:
    return 1.0 if _normal(reply) == _normal(reference) else 0.0


def contains(reply: str, reference: str) -> float:
    return 1.0 if _normal(reference) in _normal(reply) else 0.0


def token_f1(reply: str, reference: str) -> float:
    got, want = Counter(_words(reply)), Counter(_words(reference))
    common = sum((got & want).values())
    if not common:
        return 0.0
    precision, recall = common / sum(got.values()), common / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def compile_pattern(pattern: str) -> re.Pattern:
    if not pattern.strip():
        raise ExplorerError("The regex score needs a pattern after 'regex:', e.g. regex:\\bparis\\b.")
    if len(pattern) > MAX_PATTERN:
        raise ExplorerError(f"The regex is {len(pattern)} characters long; the limit is {MAX_PATTERN}.")
    if NESTED_QUANTIFIERS.search(pattern):
        raise ExplorerError("The regex repeats a group that already repeats (like (a+)+): such patterns can "
                            "take minutes on one reply. Write it without the nested repetition.")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise ExplorerError(f"The regex does not compile: {error}.") from None


def check(score: str) -> str:
    """A score choice as typed (UI, CLI, saved settings), checked: '' (none) or one of CHOICES."""
    score = (score or "").strip()
    if not score or score in CHOICES[:-1]:
        return score
    if score.startswith("regex:"):
        compile_pattern(score[len("regex:"):])
        return score
    raise ExplorerError(f"score must be exact, contains, token_f1 or regex:PATTERN, got {score[:60]!r}.")


def task_for(dataset: str, score: str = "") -> Task | None:
    """The scorer of a dataset: a bundled task's own, else the chosen score for uploaded data, else none."""
    if dataset in TASKS:
        return TASKS[dataset]
    score = check(score)
    if not score:
        return None
    if score.startswith("regex:"):
        pattern = compile_pattern(score[len("regex:"):])
        return Task("regex", "Uploaded data", "", f"replies matching /{pattern.pattern}/",
                    lambda reply, reference: 1.0 if pattern.search(reply) else 0.0)
    names = {"exact": "exact match", "contains": "contains the reference", "token_f1": "token F1"}
    return Task(score, "Uploaded data", "", names[score], {"exact": exact, "contains": contains,
                                                           "token_f1": token_f1}[score])
