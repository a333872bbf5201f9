"""What a race will cost before it starts, said the same way by the Race tab and the CLI: how many runs, the
peak memory of the hungriest entrant (the Calculator's), and the time from this machine's own finished runs
(explorer.train.estimate; with no finished run of the model it says so instead of guessing)."""

from __future__ import annotations

from dataclasses import dataclass

from ..human import human_bytes
from ..train import estimate
from .entrants import Entrant
from .races import RaceSettings


@dataclass
class RaceEstimate:
    runs: int                    # entrants × learning rates
    entrants: int
    memory_bytes: float          # the hungriest entrant's training peak (Calculator)
    seconds: float | None        # None without a measured speed of this model on this machine
    basis: str

    def line(self, steps: int, markdown: bool = True) -> str:
        bold = "**" if markdown else ""
        rates = " × 3 learning rates" if self.runs > self.entrants else ""
        head = (f"{bold}{self.runs} runs{bold} ({self.entrants} entrants{rates}), {steps} steps each; the hungriest "
                f"needs {human_bytes(self.memory_bytes)} (Calculator)")
        if self.seconds is None:
            return f"{head}; time: {self.basis}."
        return f"{head}; about {bold}{self.seconds / 60:.0f} min{bold} on this machine ({self.basis}; an estimate)."


def estimate_race(race_settings: RaceSettings, chosen: list[Entrant]) -> RaceEstimate:
    factor = 3 if race_settings.rate_sweep else 1
    guesses = [estimate.estimate(race_settings.train_config(e), e.options_dict) for e in chosen]
    seconds = (None if any(g.total_seconds is None for g in guesses)
               else factor * sum(g.total_seconds for g in guesses))
    return RaceEstimate(len(chosen) * factor, len(chosen), max(g.memory_bytes for g in guesses), seconds,
                        guesses[0].basis)
