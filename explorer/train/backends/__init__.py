"""Where jobs run: the backend behind the job queue (explorer.train.jobs.JobManager).

A job is a command that trains one or more queued runs (``python -m explorer.train.worker RUN_DIR``, or a
race's ``python -m explorer.race.worker RACE_DIR``). The contract between the queue and a backend is the
run folder's files: whatever runs the command, the server's run folders end up with the same status.json,
log.jsonl (streamed while the job runs), summary.json and adapter/ as a local worker writes.

- ``local`` (explorer.train.backends.local, the default): a worker process on this machine.
- ``ray`` (explorer.train.backends.ray_backend): a task on a Ray cluster that runs the same command on a
  node, in a temporary copy of the job's folders, and sends every change back through Ray (no shared disk).

EXPLORER_JOB_BACKEND chooses (explorer.settings.job_backend).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ... import settings


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


_backends: dict[tuple, Backend] = {}


def current() -> Backend:
    """The backend EXPLORER_JOB_BACKEND names (one per process and Ray address)."""
    name = settings.job_backend()
    key = (name, settings.ray_address() if name == "ray" else None)
    if key not in _backends:
        if name == "ray":
            from .ray_backend import RayBackend

            _backends[key] = RayBackend(key[1])
        else:
            from .local import LocalBackend

            _backends[key] = LocalBackend()
    return _backends[key]
