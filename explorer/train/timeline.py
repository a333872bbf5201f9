"""Watch it learn: a few fixed held-out questions answered at step 0 and every few steps while a chat run trains.

A class sees the replies change under its eyes (the base model's plain answer, then a pirate's) instead of a
loss curve alone. The loop (explorer/train/loop.py) calls ``start`` once before its first step and
``Watch.after_step`` after each step; every snapshot is one event through the loop's ``on_event``, so the
run's log.jsonl keeps the timeline and a reload shows it (explorer/ui/timeline_view.py draws it):

    {"event": "watch", "questions": [...], "references": [...], "steps": [0, 5, 10, 15, 20], "every": 5,
     "new_tokens": 22}                                                                            (the plan)
    {"event": "replies", "step": 5, "replies": [...], "cut": [true, false], "seconds": 1.2, "next_step": 10}

Generation is greedy, batched and short (``reply_budget``). It runs with the adapter as it is, not folded into the weights
(merged_while_scoring in loop.py folds it for the final scoring): folding and unfolding re-round the frozen
weights, and in the middle of training that rounding would carry into the following steps. Unfolded, greedy
generation draws no random numbers and changes no weight, so a run trains the same with the watch on or off
(tests/test_timeline.py checks the losses are equal).
"""

from __future__ import annotations

import time
from typing import Callable

from ..evaluate import generate_token_ids, user_and_reference

# New tokens per reply: the longest of the watched questions' data answers plus a few (a reply worded a little
# longer still ends), within these bounds. Each new token is one decoding pass over the model: on the bundled
# model (one torch thread, as the app's worker trains) 3 prompts took 5.0 s for 24 tokens and 3.4 s for 16, and 2
# prompts 3.8 s for 24 (CPU seconds of one snapshot, mean of 3, measured once with a scratch script, not a bench).
# The floor lets a base model say its answer before the cut (a sentiment label is one token).
MIN_NEW_TOKENS, MAX_NEW_TOKENS, MARGIN_TOKENS = 12, 24, 4


def snapshot_steps(steps: int, every: int) -> list[int]:
    """The steps whose replies the watch shows: 0, every ``every`` steps, and the last step; [] when off."""
    if every <= 0 or steps < 0:
        return []
    return sorted({0, *range(every, steps + 1, every), steps})


def reply_budget(tokenizer, references: list[str]) -> int:
    """New tokens per watched reply: the longest data answer's length in tokens plus a margin, within bounds."""
    longest = max((len(tokenizer.encode(text, add_special_tokens=False)) for text in references), default=0)
    return max(MIN_NEW_TOKENS, min(MAX_NEW_TOKENS, longest + MARGIN_TOKENS))


def watched_rows(heldout_rows: list[dict], count: int) -> list[dict]:
    """``count`` held-out rows spread evenly over the held-out data (its first rows are often alike: two
    capitals in a row), in a fixed order so every snapshot and every rerun asks the same questions."""
    count = min(count, len(heldout_rows))
    if count <= 0:
        return []
    return [heldout_rows[i * len(heldout_rows) // count] for i in range(count)]


class Watch:
    """The questions one run asks, and when; ``after_step`` answers them when a snapshot is due."""

    def __init__(self, steps: int, every: int, heldout_rows: list[dict], count: int, tokenizer, device: str,
                 on_event: Callable[[dict], None], should_stop: Callable[[], bool] | None = None,
                 new_tokens: int | None = None):
        pairs = [user_and_reference(row) for row in watched_rows(heldout_rows, count)] if every > 0 else []
        self.questions = [question for question, _ in pairs]
        self.references = [reference for _, reference in pairs]
        self.steps = snapshot_steps(steps, every) if pairs else []
        self.tokenizer, self.device = tokenizer, device
        self.new_tokens = new_tokens or (reply_budget(tokenizer, self.references) if self.steps else MAX_NEW_TOKENS)
        self.on_event, self.should_stop = on_event, should_stop or (lambda: False)

    @property
    def on(self) -> bool:
        return bool(self.steps)

    def after_step(self, model, step: int) -> None:
        """Answer the questions if ``step`` is a snapshot step (0: before the first optimizer step)."""
        if step not in self.steps or self.should_stop():
            return
        started = time.perf_counter()
        new_ids = generate_token_ids(model, self.tokenizer, self.questions, self.new_tokens, self.device,
                                     batch_size=len(self.questions), should_stop=self.should_stop)
        if self.should_stop():  # stopped while generating: the replies are cut short, not a snapshot
            return
        replies = [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_ids]
        cut = [len(ids) >= self.new_tokens for ids in new_ids]  # the budget ended it, not the model
        later = [s for s in self.steps if s > step]
        self.on_event({"event": "replies", "step": step, "replies": replies, "cut": cut,
                       "seconds": round(time.perf_counter() - started, 3), "next_step": later[0] if later else None})


def start(config, heldout_rows: list[dict], model, tokenizer, device: str, on_event: Callable[[dict], None],
          should_stop: Callable[[], bool] | None = None) -> Watch:
    """The run's watch (``config.watch_every``, ``config.watch_prompts``): its plan logged and step 0's
    replies taken. Off (0, or no held-out rows) it logs nothing and ``after_step`` does nothing."""
    watch = Watch(config.steps, config.watch_every, heldout_rows, config.watch_prompts, tokenizer, device,
                  on_event, should_stop)
    if watch.on:
        on_event({"event": "watch", "questions": watch.questions, "references": watch.references,
                  "steps": watch.steps, "every": config.watch_every, "new_tokens": watch.new_tokens})
        watch.after_step(model, 0)
    return watch
