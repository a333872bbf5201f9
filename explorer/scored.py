"""The scored questions of a run: its held-out rows' user turns (the task score, what it learned), training
questions asked again for their facts, and the forgetting probe's general questions (explorer.data.probe), asked
in one batched greedy generation and scored. Used by training, the race, Compare and the forgetting dial."""

from __future__ import annotations

from . import learned
from .data.probe import score_reply, subset
from .evaluate import generate_replies, user_and_reference


def task_and_probe_scores(model, tokenizer, rows: list[dict], task, probe_count: int, max_new_tokens: int,
                          device: str, should_stop=None) -> tuple[float | None, float | None]:
    """The task's score on ``rows`` and the probe's score on its first ``probe_count`` questions, from one
    batched greedy generation with the same token budget for both (``ScoredQuestions.ask``).
    (None, None) when ``should_stop`` said to stop during generation."""
    asked = ScoredQuestions(rows, task, probe_count)
    replies = asked.ask(model, tokenizer, max_new_tokens, device, should_stop=should_stop)
    return (None, None) if replies is None else asked.scores(replies)


class ScoredQuestions:
    """The prompts a scored run asks (the held-out rows' user turns, then the training questions asked again
    for their facts, then the probe's first ``probe_count`` questions) and how their replies score;
    bench/race.py --budgets scores cut replies with it too.

    The held-out rows are asked when there is a task to score them, or with ``resemble`` (what a fine-tune
    learned: explorer.learned); ``fact_rows``: training rows whose facts are checked (explorer.learned)."""

    def __init__(self, rows: list[dict], task, probe_count: int, resemble: bool = False,
                 fact_rows: list[dict] = ()):
        self.task = task
        self.pairs = [user_and_reference(r) for r in rows] if task is not None or resemble else []
        self.facts = learned.fact_questions(list(fact_rows)) if fact_rows else []
        self.chosen = subset(probe_count)
        self.prompts = ([user for user, _ in self.pairs] + [q.prompt for q in self.facts]
                        + [q["question"] for q in self.chosen])

    def ask(self, model, tokenizer, max_new_tokens: int, device: str, should_stop=None) -> list[str] | None:
        """Every prompt's greedy reply, from one batched generation; None when ``should_stop`` said to stop.

        Why one batch: each decoding step reads every weight of the model once, however many prompts it
        carries. Measured on the bundled model (2-core CPU): 8 task prompts took 5.4 s and 10 probe questions
        5.9 s apart, for 16 new tokens each."""
        if not self.prompts:
            return []
        replies = generate_replies(model, tokenizer, self.prompts, max_new_tokens, device,
                                   batch_size=min(max(16, len(self.prompts)), 64), should_stop=should_stop)
        return None if should_stop is not None and should_stop() else replies

    def _split(self, replies: list[str]) -> tuple[list[str], list[str], list[str]]:
        held, facts = len(self.pairs), len(self.facts)
        return replies[:held], replies[held:held + facts], replies[held + facts:]

    def _probe_right(self, probe_replies: list[str]) -> int:
        return int(sum(score_reply(reply, q["answers"]) for reply, q in zip(probe_replies, self.chosen)))

    def scores(self, replies: list[str]) -> tuple[float | None, float | None]:
        """(task score, probe score) of the replies, in the prompts' order; None where nothing was asked."""
        held, _, probe_replies = self._split(replies)
        task_score = self.task.score(held, [ref for _, ref in self.pairs]) if self.pairs and self.task else None
        probe = self._probe_right(probe_replies) / len(self.chosen) if self.chosen else None
        return task_score, probe

    def learned(self, replies: list[str]):
        """What the replies show of a fine-tune's learning (an explorer.learned.Side)."""
        held, facts, probe_replies = self._split(replies)
        return learned.measure(self.pairs, held, self.facts, facts, self._probe_right(probe_replies), len(self.chosen))
