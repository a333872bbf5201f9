"""Training jobs: a queue, jobs running (one at a time by default), stop and crash handling.

The web server never trains: a backend (explorer.train.backends) runs each job's command — a worker process
here (``local``, the default) or a task on a Ray cluster (``ray``) — and the page follows the run through its
files (status.json, log.jsonl). A crash, an out-of-memory kill, a dead Ray node or a stop ends the job, never
the server, and the queue moves on whatever happened to the run.

Hosting: EXPLORER_MAX_QUEUE runs may wait (default 8) and EXPLORER_MAX_CONCURRENT_JOBS jobs run at once
(default 1 locally; on Ray, the cluster's capacity unless set); EXPLORER_DISK_BUDGET_GB is checked before each
new run (explorer.train.runs). The same caps hold on both backends.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from . import backends, lifecycle, runs
from .backends import Backend, Ended, Handle, Job

__all__ = ["Job", "JobManager"]


class JobManager:
    def __init__(self, max_queue: int | None = None, max_concurrent: int | None = None,
                 backend: Backend | None = None):
        self.backend = backend or backends.current()
        self.max_queue = settings.max_queue() if max_queue is None else max_queue
        self.max_concurrent = (settings.max_concurrent_jobs(self.backend.name) if max_concurrent is None
                               else max_concurrent)
        self.worker_command = [sys.executable, "-m", "explorer.train.worker"]  # + RUN_DIR; tests may swap the program
        self._queue: deque[Job] = deque()
        self._running: dict[int, tuple[Job, Handle]] = {}
        self._cond = threading.Condition()
        self.interrupted = lifecycle.mark_interrupted()
        threading.Thread(target=self._loop, name="explorer-jobs", daemon=True).start()

    def submit(self, config, options_values: dict) -> Path:
        """Queue one fine-tune: its run folder."""
        self.backend.check()  # e.g. the Ray cluster is unreachable: nothing is created
        with self._cond:
            self._check_room()
            run_dir = lifecycle.create(config, options_values)  # checks the disk budget first
            self._queue.append(Job([run_dir], [*self.worker_command, str(run_dir)]))
            self._cond.notify_all()
        return run_dir

    def submit_job(self, run_dirs: list[Path], command: list[str], name: str = "",
                   log_dir: Path | None = None) -> None:
        """Queue runs already created (queued) that one worker trains in turn with ``command`` (a race)."""
        self.backend.check()
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

    def slots(self) -> int:
        """Jobs that may run at once now: the hosting cap, within the backend's capacity (a Ray cluster's)."""
        try:
            return max(1, min(self.max_concurrent, self.backend.slots()))
        except Exception:  # noqa: BLE001 - e.g. Ray unreachable: the next job's start says why it cannot run
            return max(1, min(self.max_concurrent, len(self._running) + 1))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue or len(self._running) >= self.slots():
                    self._cond.wait(self.backend.recheck_seconds)  # a Ray cluster may grow meanwhile
                job = self._queue.popleft()
                handle = self._start(job)
                if handle is None:
                    continue
                self._running[id(job)] = (job, handle)
            threading.Thread(target=self._watch, args=(job, handle), name=f"explorer-job-{job.name}",
                             daemon=True).start()

    def _start(self, job: Job) -> Handle | None:
        try:
            return self.backend.start(job)
        except (OSError, ExplorerError) as error:  # a full disk, a deleted run folder, no memory to fork, Ray
            reason = (f"The training worker could not start: {error.strerror or error}." if isinstance(error, OSError)
                      else str(error))  # gone: this job fails, not the queue
            for run_dir in job.runs:
                try:
                    lifecycle.fail(run_dir, reason)
                except ExplorerError:
                    pass
            return None

    def _watch(self, job: Job, handle: Handle) -> None:
        try:
            ended = handle.wait()
        except Exception as error:  # noqa: BLE001 - whatever the backend raised, the runs end and the queue goes on
            ended = Ended(None, f"The job's backend failed: {type(error).__name__}: {str(error)[:300]}")
        try:
            for run_dir in job.runs:
                lifecycle.job_ended(run_dir, ended.code, ended.reason)
        except Exception:  # noqa: BLE001 - whatever happened to this job's files, the queue goes on
            pass
        finally:
            with self._cond:
                self._running.pop(id(job), None)
                self._cond.notify_all()


def train_and_follow(run_dir: Path, on_event=lambda event: None, backend: Backend | None = None,
                     poll_seconds: float = 0.5) -> lifecycle.Outcome:
    """Train one queued run through the backend without a queue, and wait for it here, handing its events to
    ``on_event`` as they land in the run's log.jsonl (the command line's ``train`` on Ray)."""
    backend = backend or backends.current()
    job = Job([run_dir], [sys.executable, "-m", "explorer.train.worker", str(run_dir)])
    try:
        handle = backend.start(job)
    except (OSError, ExplorerError) as error:  # the run must not stay queued with nobody to train it
        lifecycle.fail(run_dir, f"The job could not start: {getattr(error, 'strerror', None) or error}")
        raise
    ended: list[Ended] = []
    waiter = threading.Thread(target=lambda: ended.append(handle.wait()), daemon=True)
    waiter.start()
    seen = 0
    try:
        while True:
            finished = not waiter.is_alive()
            events = runs.read_log(run_dir)
            for event in events[seen:]:
                on_event(event)
            seen = len(events)
            if finished:
                break
            waiter.join(poll_seconds)
    except BaseException:  # Ctrl-C: this process gives up the run (Ray ends the task with its driver)
        lifecycle.interrupt(run_dir, "The command line that was waiting for this run was interrupted.")
        raise
    lifecycle.job_ended(run_dir, ended[0].code, ended[0].reason)
    status = runs.status(run_dir)
    summary = runs.read_json(run_dir / "summary.json", None)
    return lifecycle.Outcome(status.get("state", "unknown"), summary, status.get("error", ""))
