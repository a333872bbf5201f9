"""When a run has diverged, one rule for the training loops (chat in loop.py).

A run diverged when
  - a training loss is not finite (inf or nan), or
  - the training loss is above max(3 × the first step's loss, the first step's loss + 5) for 2 steps in a row, or
  - a held-out loss is not finite, or above max(3 × the first held-out loss, the first held-out loss + 5).

Why these numbers: a short fine-tune that works lowers its loss, or wobbles from batch to batch by far less than
a factor of 3; the margin of 5 keeps a small first loss (0.3: a model that already knows the data) from
flagging ordinary batch noise; 2 steps in a row keep one odd batch from ending a run, while the held-out loss,
measured on the same examples every time, needs no second look. The run that prompted the rule (issue 23):
LoRA at learning rate 10 went 3.7 → 35.8 at step 2, held-out 3.54 → 10.80, and was reported "done".
A diverged run stops at once: more steps only move it further from anything useful.
"""

from __future__ import annotations

import math

from ..learned import Diverged

FACTOR, MARGIN, PATIENCE = 3.0, 5.0, 2


def bound(first: float) -> float:
    """The loss above which a run counts as diverging, given where it started."""
    return max(FACTOR * first, first + MARGIN)


def lower_rate(learning_rate: float, default_rate: float) -> float:
    """The rate to suggest: the method's default when the run used more than it, else a tenth of the run's."""
    return default_rate if learning_rate > default_rate else learning_rate / 10


class Watch:
    """Fed every training and held-out loss of a run; ``diverged`` is set once the rule above is met."""

    def __init__(self, learning_rate: float, default_rate: float):
        self.learning_rate, self.default_rate = learning_rate, default_rate
        self.first_train: float | None = None
        self.first_eval: float | None = None
        self.above = 0
        self.diverged: Diverged | None = None

    def _diverge(self, step: int, why: str) -> bool:
        if self.diverged is None:
            self.diverged = Diverged(step, why, self.learning_rate, lower_rate(self.learning_rate, self.default_rate))
        return True

    def train_loss(self, step: int, loss: float) -> bool:
        """True when the run has diverged, counting this step's training loss."""
        if not math.isfinite(loss):
            start = f" (it started at {self.first_train:.3g})" if self.first_train is not None else ""
            return self._diverge(step, f"the training loss became {loss}{start}")
        if self.first_train is None:
            self.first_train = loss
        self.above = self.above + 1 if loss > bound(self.first_train) else 0
        if self.above >= PATIENCE:
            return self._diverge(step, f"the training loss rose from {self.first_train:.3g} to {loss:.3g} (above "
                                       f"{bound(self.first_train):.3g} for {PATIENCE} steps in a row)")
        return self.diverged is not None

    def eval_loss(self, step: int, loss: float) -> bool:
        """True when the run has diverged, counting this held-out loss."""
        if not math.isfinite(loss):
            return self._diverge(step, f"the held-out loss became {loss}")
        if self.first_eval is None:
            self.first_eval = loss
        elif loss > bound(self.first_eval):
            return self._diverge(step, f"the held-out loss rose from {self.first_eval:.3g} to {loss:.3g} (above "
                                       f"{bound(self.first_eval):.3g})")
        return self.diverged is not None

    def message(self) -> str:
        """The one line the page and the CLI show for a diverged run."""
        d = self.diverged
        return "" if d is None else (f"Diverged at step {d.step}: {d.why} with learning rate {d.learning_rate:g}. "
                                     f"Try a lower learning rate, such as {d.lower_rate:g}.")
