"""Training jobs: worker processes (one at a time by default), a queue behind them, stop and crash handling.

The web server never trains: it starts ``python -m explorer.train.worker RUN_DIR`` and follows the run
through files (status.json, log.jsonl), as LLaMA-Factory's web UI does. A crash, an out-of-memory
kill or a stop ends the worker, never the server, and the queue moves on whatever happened to the run.

Hosting: EXPLORER_MAX_QUEUE runs may wait (default 8) and EXPLORER_MAX_CONCURRENT_JOBS workers run at
once (default 1); EXPLORER_DISK_BUDGET_GB is checked before each new run (explorer.train.runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from . import lifecycle, runs


@dataclass
class Job:
    """Runs trained one after another by one worker process: a single fine-tune, or a race's entrants (one
    process keeps the libraries loaded between them)."""

    runs: list[Path]
    command: list[str]
    name: str = field(default="")
    log_dir: Path | None = None      # where the worker's stderr goes (default: the first run's folder)

    def __post_init__(self):
        self.name = self.name or (self.runs[0].name if self.runs else "job")
        self.log_dir = self.log_dir or self.runs[0]


class JobManager:
    def __init__(self, max_queue: int | None = None, max_concurrent: int | None = None):
        self.max_queue = settings.max_queue() if max_queue is None else max_queue
        self.max_concurrent = settings.max_concurrent_jobs() if max_concurrent is None else max_concurrent
        self.worker_command = [sys.executable, "-m", "explorer.train.worker"]  # + RUN_DIR; tests may swap the program
        self._queue: deque[Job] = deque()
        self._running: dict[int, tuple[Job, subprocess.Popen]] = {}
        self._cond = threading.Condition()
        self.interrupted = lifecycle.mark_interrupted()
        threading.Thread(target=self._loop, name="explorer-jobs", daemon=True).start()

    def submit(self, config, options_values: dict) -> Path:
        """Queue one fine-tune: its run folder."""
        with self._cond:
            self._check_room()
            run_dir = lifecycle.create(config, options_values)  # checks the disk budget first
            self._queue.append(Job([run_dir], [*self.worker_command, str(run_dir)]))
            self._cond.notify_all()
        return run_dir

    def submit_job(self, run_dirs: list[Path], command: list[str], name: str = "",
                   log_dir: Path | None = None) -> None:
        """Queue runs already created (queued) that one worker trains in turn with ``command`` (a race)."""
        with self._cond:
            self._check_room()
            self._queue.append(Job(list(run_dirs), list(command), name, log_dir))
            self._cond.notify_all()

    def _check_room(self) -> None:
        if len(self._queue) >= self.max_queue:
            raise ExplorerError(f"The training queue is full ({self.max_queue} runs waiting); try again later "
                                "(a race waits as one run).")

    def _job_of(self, run_dir: Path) -> tuple[Job | None, int | None]:
        """(the job holding this run, its position: 0 running, 1.. waiting), or (None, None)."""
        for job, _ in self._running.values():
            if run_dir in job.runs:
                return job, 0
        for i, job in enumerate(self._queue, start=1):
            if run_dir in job.runs:
                return job, i
        return None, None

    def position(self, run_dir: Path) -> int | None:
        """0 while its job runs, 1.. while its job waits, None once its job ended."""
        with self._cond:
            return self._job_of(run_dir)[1]

    def stop(self, run_dir: Path) -> None:
        """Stop a run: cancelled if it has not started, else stopped after its current step."""
        with self._cond:
            job, position = self._job_of(run_dir)
            if job is not None and runs.status(run_dir).get("state") == "queued":
                lifecycle.cancel(run_dir)  # a worker skips cancelled runs
                if position and all(runs.status(r).get("state") == "cancelled" for r in job.runs):
                    self._queue.remove(job)
                return
        lifecycle.request_stop(run_dir)  # the worker checks before every step

    def busy(self) -> bool:
        with self._cond:
            return bool(self._running) or bool(self._queue)

    def running(self) -> list[Path]:
        """The runs of the jobs that are running now."""
        with self._cond:
            return [run for job, _ in self._running.values() for run in job.runs]

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue or len(self._running) >= self.max_concurrent:
                    self._cond.wait()
                job = self._queue.popleft()
                process = self._start(job)
                if process is None:
                    continue
                self._running[id(job)] = (job, process)
            threading.Thread(target=self._watch, args=(job, process), name=f"explorer-job-{job.name}",
                             daemon=True).start()

    def _start(self, job: Job) -> subprocess.Popen | None:
        try:
            with (job.log_dir / "worker.err").open("wb") as err:  # the child keeps its own copy of the descriptor
                return subprocess.Popen(job.command, cwd=settings.REPO_ROOT, env=os.environ.copy(),
                                        stdout=subprocess.DEVNULL, stderr=err)
        except OSError as error:  # a full disk, a deleted run folder, no memory to fork: this job fails, not the queue
            for run_dir in job.runs:
                try:
                    lifecycle.fail(run_dir, f"The training worker could not start: {error.strerror or error}.")
                except ExplorerError:
                    pass
            return None

    def _watch(self, job: Job, process: subprocess.Popen) -> None:
        code = process.wait()
        try:
            for run_dir in job.runs:
                lifecycle.worker_exited(run_dir, code)
        except Exception:  # noqa: BLE001 - whatever happened to this job's files, the queue goes on
            pass
        finally:
            with self._cond:
                self._running.pop(id(job), None)
                self._cond.notify_all()
