"""What a chat fine-tune learned: three numbers, base → adapted, and one sentence computed from them.

    resemblance      how close the replies to held-out questions are to the held-out answers: ROUGE-L F1
                     over words (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries", §3.1,
                     β = 1), the longest common subsequence from rapidfuzz. Style shows here first: a reply that
                     opens and closes like the file's answers shares long runs of words with them.
    facts recalled   the training questions themselves asked again (the first FACT_QUESTIONS that hold a fact),
                     and how many of their answers' concrete facts the reply reproduces (``extract_facts``).
    general answers  the forgetting probe (explorer.data.probe): general questions with known answers.

A short fine-tune teaches form before facts: the style of a file's answers is shared by every row, each fact
is in one row. The sentence (``verdict``) says which of the two this run learned, and what it forgot.
Pure logic: the replies come from explorer.scored.ScoredQuestions' one batched generation.

What it costs: the fact and probe questions ride in the batch of the held-out generation a run already does for
its task score, before and after training. Measured on the bundled model, pirate data, the defaults (16 held-out
questions, 32 new tokens), on the 2-core machine while other jobs shared it (so CPU seconds, not wall time): 16
prompts took 66 and 69 CPU s, 34 (with 8 fact and 10 probe questions) 92 CPU s, about 1.4x per scoring. Uploaded
data without a chosen score had no held-out generation: for it both generations are new.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

FACT_QUESTIONS = 8      # training questions asked again: few, they share the held-out generation's batch
STYLE_GAIN = 0.05       # a rise in resemblance (ROUGE-L) this large counts as the style learned
FACTS_LEARNED = 0.5     # at least half of the facts recalled (and more than the base: learned from the file)
FORGOT_A_LOT = 0.2      # a drop in the probe's share this large (2 of 10 questions) counts as forgetting

_WORD = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+")
# A number, with a currency sign before it and a unit of time or percent after it: 7am, 3:30 pm, $4.50, 10%.
_NUMBER = re.compile(r"[$£€¥]?\d+(?:[.,:]\d+)*(?:\s?(?:am|pm|a\.m\.|p\.m\.|%))?", re.IGNORECASE)
_TOKEN = re.compile(r"[^\W\d_][\w'’-]*|\d+(?:[.,:]\d+)*\w*|[^\w\s]")
_SENTENCE_END = set(".!?:;")
_NOT_NAMES = {"i", "i'm", "i’m", "i'll", "i’ll", "i've", "i’ve", "i'd", "i’d", "ok"}


def words(text: str) -> list[str]:
    """Lower-case words and numbers, accents stripped: "Rosie's 7am!" -> ["rosie", "s", "7", "am"]."""
    text = unicodedata.normalize("NFKD", str(text or ""))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _WORD.findall(text.casefold())


def rouge_l(reply: str, reference: str) -> float:
    """ROUGE-L F1 of a reply against its reference over words: 2·LCS / (|reply| + |reference|), in [0, 1]."""
    from rapidfuzz.distance import LCSseq

    got, want = words(reply), words(reference)
    if not got or not want:
        return 0.0
    return 2 * LCSseq.similarity(got, want) / (len(got) + len(want))


def extract_facts(text: str) -> list[tuple[str, ...]]:
    """The concrete facts of an answer, each as its words (``words``), in order, without repeats:

    - numbers, with a currency sign or a unit of time or percent when one is written with them: "7am",
      "3:30 pm", "$4.50", "48", "10%" (the sign is dropped: "$4.50" is ("4.50",); "7am" is ("7", "am"));
    - names: runs of capitalised words, "Rosie's Bakery", "Madrid", "Main Street". A single capitalised
      word that opens a sentence ("Hi", "We", "Saturday") is not counted: nothing tells it from an ordinary
      word. "I" and its contractions are not names.
    """
    found = [tuple(words(m.group())) for m in _NUMBER.finditer(text or "")]
    run: list[str] = []
    run_opens_sentence = sentence_start = True

    def close() -> None:
        if run and not (len(run) == 1 and run_opens_sentence):
            found.append(tuple(words(" ".join(run))))
        run.clear()

    for match in _TOKEN.finditer(text or ""):
        token = match.group()
        if token[0].isalpha() and token[0].isupper() and token.casefold() not in _NOT_NAMES:
            if not run:
                run_opens_sentence = sentence_start
            run.append(token)
        else:
            close()
        sentence_start = token in _SENTENCE_END
    close()
    unique: list[tuple[str, ...]] = []
    for fact in found:
        if fact and fact not in unique:
            unique.append(fact)
    return unique


def contains(reply: str, fact: tuple[str, ...]) -> bool:
    """The fact's words occur in the reply, in order and next to each other ("7am" matches "7 am")."""
    got, width = words(reply), len(fact)
    return any(tuple(got[i:i + width]) == fact for i in range(len(got) - width + 1))


@dataclass(frozen=True)
class FactQuestion:
    prompt: str
    facts: tuple[tuple[str, ...], ...]


def fact_questions(rows: list[dict], count: int = FACT_QUESTIONS) -> list[FactQuestion]:
    """The first ``count`` training rows whose answer holds a fact, with those facts. Not counted as facts of
    a row: what its question already says (echoing "Spain" is not recalling it), and what more than half of
    the file's answers say (with 4 answers or more): a shop's name in every sign-off is its style."""
    from .evaluate import user_and_reference

    pairs = [user_and_reference(row) for row in rows]
    per_answer = [extract_facts(answer) for _, answer in pairs]
    counts: dict[tuple[str, ...], int] = {}
    for facts in per_answer:
        for fact in facts:
            counts[fact] = counts.get(fact, 0) + 1
    common = {fact for fact, n in counts.items() if len(pairs) >= 4 and n > len(pairs) / 2}
    chosen = []
    for (question, _), facts in zip(pairs, per_answer):
        kept = tuple(f for f in facts if f not in common and not contains(question, f))
        if kept:
            chosen.append(FactQuestion(question, kept))
        if len(chosen) >= count:
            break
    return chosen


@dataclass(frozen=True)
class Side:
    """What one model (the base or the fine-tune) did on the questions."""

    similarity: float | None   # mean ROUGE-L of held-out replies against held-out answers; None: none asked
    facts_recalled: int
    facts_checked: int
    probe_right: int
    probe_asked: int

    @property
    def fact_recall(self) -> float | None:
        return self.facts_recalled / self.facts_checked if self.facts_checked else None

    @property
    def probe_score(self) -> float | None:
        return self.probe_right / self.probe_asked if self.probe_asked else None


def measure(heldout_pairs: list[tuple[str, str]], heldout_replies: list[str], questions: list[FactQuestion],
            fact_replies: list[str], probe_right: int, probe_asked: int) -> Side:
    """A model's Side from its replies (in the questions' order)."""
    similarity = (sum(rouge_l(reply, ref) for reply, (_, ref) in zip(heldout_replies, heldout_pairs))
                  / len(heldout_pairs) if heldout_pairs else None)
    recalled = sum(contains(reply, fact) for reply, q in zip(fact_replies, questions) for fact in q.facts)
    return Side(similarity, recalled, sum(len(q.facts) for q in questions), probe_right, probe_asked)


@dataclass(frozen=True)
class Diverged:
    """How a run diverged (explorer.train.divergence words it)."""

    step: int
    why: str                   # e.g. "the training loss rose from 3.70 to 35.8"
    learning_rate: float
    lower_rate: float


def summary_keys(base: Side | None, adapted: Side | None) -> dict:
    """The run summary's "what it learned" numbers, each in [0, 1] or None where not measured."""
    return {"similarity_base": base.similarity if base else None,
            "similarity_adapted": adapted.similarity if adapted else None,
            "fact_recall_base": base.fact_recall if base else None,
            "fact_recall_adapted": adapted.fact_recall if adapted else None,
            "probe_score_base": base.probe_score if base else None,
            "probe_score_adapted": adapted.probe_score if adapted else None}


def verdict(base: Side | None, adapted: Side | None, diverged: Diverged | None = None) -> str:
    """One plain paragraph from the numbers: what the fine-tune learned (style, facts), what it did not, and
    what it forgot; for a diverged run, that and the lower learning rate to try."""
    sentences = []
    if diverged is not None:
        sentences.append(f"Training diverged at step {diverged.step}: {diverged.why} with learning rate "
                         f"{diverged.learning_rate:g}, so the model learned noise rather than the training data. Start "
                         f"again with a lower learning rate, such as {diverged.lower_rate:g}.")
    elif base is None or adapted is None:
        return "What it learned was not measured: the base model was not scored before training."
    else:
        sentences.append(_learned_sentence(base, adapted))
    if base is not None and adapted is not None and base.probe_asked and adapted.probe_asked:
        sentences.append(forgetting_sentence(base.probe_right, adapted.probe_right, adapted.probe_asked))
    return " ".join(sentences)


def _learned_sentence(base: Side, adapted: Side) -> str:
    measured = base.similarity is not None and adapted.similarity is not None
    style = measured and adapted.similarity - base.similarity >= STYLE_GAIN
    numbers = f"{base.similarity:.2f} → {adapted.similarity:.2f}" if measured else ""
    checked = adapted.facts_checked
    recalls = checked > 0 and adapted.fact_recall >= FACTS_LEARNED  # perhaps known before: the base's count says
    facts = recalls and adapted.facts_recalled > base.facts_recalled  # learned from the file
    recall = (f"recalls {adapted.facts_recalled} of {checked} facts from the training data (the base: {base.facts_recalled})"
              if checked else "")
    if style and recalls:
        return f"It answers in the style of the training data now (resemblance to the held-out answers {numbers}) and it {recall}."
    if style and checked:
        return (f"It answers in the style of the training data now (resemblance to the held-out answers {numbers}), but it {recall} "
                "— a short fine-tune teaches form before facts; for facts, give it more steps or put them in the "
                "prompt.")
    if style:
        return (f"It answers in the style of the training data now (resemblance to the held-out answers "
                f"{numbers}); the training data's answers hold no numbers or names to check its facts against.")
    if facts:
        unchanged = f", though its replies resemble the held-out answers little more than before ({numbers})"
        return f"It {recall}{unchanged if measured else ''}: it learned facts before style."
    worse = measured and base.similarity - adapted.similarity >= STYLE_GAIN
    parts = ([f"its replies resemble the held-out answers {'less than' if worse else 'about as much as'} before "
              f"({numbers})"] if measured else [])
    parts += [f"it {recall}"] if checked else []
    detail = ": " + " and ".join(parts) if parts else ""
    advice = ("A lower learning rate may help: the replies moved away from the data's answers." if worse else
              "Give it more steps or a higher learning rate.")
    return f"It has not visibly learned from the training data yet{detail}. {advice}"


def forgetting_sentence(base_right: int, adapted_right: int, asked: int, subject: str = "It") -> str:
    """What the forgetting probe says: kept or lost general knowledge, from the counts of right answers."""
    if (base_right - adapted_right) / asked >= FORGOT_A_LOT - 1e-9:
        return (f"But {subject[0].lower()}{subject[1:]} forgot a lot: it answers {adapted_right} of {asked} general "
                f"questions now (the base: {base_right}); fewer steps or a lower learning rate forget less.")
    still = "still answers" if adapted_right <= base_right else "answers"
    return f"{subject} {still} {adapted_right} of {asked} general questions (the base: {base_right})."
