"""What a backend and the job queue share: a job, how it ended, and the backend's interface (explorer.train.backends
chooses one; local.py and ray_backend.py implement it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class Job:
    """Runs trained one after another by one command: a single fine-tune, or a race's entrants (one
    process keeps the libraries loaded between them)."""

    runs: list[Path]
    command: list[str]
    name: str = field(default="")
    log_dir: Path | None = None      # where the worker's stderr goes (default: the first run's folder)

    def __post_init__(self):
        self.name = self.name or (self.runs[0].name if self.runs else "job")
        self.log_dir = self.log_dir or self.runs[0]

    @property
    def folders(self) -> list[Path]:
        """Every folder the job reads and writes: its runs and, for a race, the race's folder."""
        return list(dict.fromkeys([*self.runs, self.log_dir]))


@dataclass
class Ended:
    """How a job's command ended: its exit code, or (code None) why it never reached an exit of its own
    (a Ray worker process or node that died, a connection lost)."""

    code: int | None
    reason: str = ""


class Handle(Protocol):
    def wait(self) -> Ended: ...


class Backend(Protocol):
    name: str
    recheck_seconds: float | None   # how often the queue asks again for free slots (None: only when told)

    def check(self) -> None:
        """Raise ExplorerError when no job can be submitted now (e.g. the Ray cluster is unreachable)."""

    def slots(self) -> int:
        """How many jobs may run at once now (the cluster's capacity; the hosting cap is applied above)."""

    def start(self, job: Job) -> Handle:
        """Start the job (raises OSError or ExplorerError when it cannot)."""
