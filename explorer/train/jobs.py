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
from pathlib import Path

from . import runs
from .. import settings
from ..errors import ExplorerError

MEMORY_HINT = ("Lower the batch size (batch_size) or the sequence length (seq_len), turn on gradient checkpointing "
               "(gradient_checkpointing), or use QLoRA (method qlora).")


class JobManager:
    def __init__(self, max_queue: int | None = None, max_concurrent: int | None = None):
        self.max_queue = settings.max_queue() if max_queue is None else max_queue
        self.max_concurrent = settings.max_concurrent_jobs() if max_concurrent is None else max_concurrent
        self.worker_command = [sys.executable, "-m", "explorer.train.worker"]  # + RUN_DIR; tests may swap the program
        self._queue: deque[Path] = deque()
        self._running: dict[Path, subprocess.Popen] = {}
        self._cond = threading.Condition()
        self.interrupted = runs.mark_interrupted()
        threading.Thread(target=self._loop, name="explorer-jobs", daemon=True).start()

    def submit(self, config, options_values: dict) -> Path:
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise ExplorerError(f"The training queue is full ({self.max_queue} runs waiting); try again later.")
            run_dir = runs.create_run(config, options_values)  # checks the disk budget first
            self._queue.append(run_dir)
            self._cond.notify_all()
        return run_dir

    def position(self, run_dir: Path) -> int | None:
        """0 while running, 1.. while waiting, None once finished."""
        with self._cond:
            if run_dir in self._running:
                return 0
            for i, queued in enumerate(self._queue, start=1):
                if queued == run_dir:
                    return i
        return None

    def stop(self, run_dir: Path) -> None:
        with self._cond:
            if run_dir in self._queue:
                self._queue.remove(run_dir)
                runs.set_status(run_dir, "cancelled")
                return
        try:
            (run_dir / "STOP").touch()  # the worker checks before every step
        except OSError as error:
            raise runs.not_writable(run_dir / "STOP", error) from None

    def busy(self) -> bool:
        with self._cond:
            return bool(self._running) or bool(self._queue)

    def running(self) -> list[Path]:
        with self._cond:
            return list(self._running)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue or len(self._running) >= self.max_concurrent:
                    self._cond.wait()
                run_dir = self._queue.popleft()
                process = self._start(run_dir)
                if process is None:
                    continue
                self._running[run_dir] = process
            threading.Thread(target=self._watch, args=(run_dir, process), name=f"explorer-job-{run_dir.name}",
                             daemon=True).start()

    def _start(self, run_dir: Path) -> subprocess.Popen | None:
        try:
            with (run_dir / "worker.err").open("wb") as err:  # the child keeps its own copy of the descriptor
                return subprocess.Popen([*self.worker_command, str(run_dir)], cwd=settings.REPO_ROOT,
                                        env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=err)
        except OSError as error:  # a full disk, a deleted run folder, no memory to fork: this run fails, not the queue
            try:
                _record_failure(run_dir, f"The training worker could not start: {error.strerror or error}.")
            except ExplorerError:
                pass
            return None

    def _watch(self, run_dir: Path, process: subprocess.Popen) -> None:
        code = process.wait()
        try:
            self._finish(run_dir, code)
        except Exception:  # noqa: BLE001 - whatever happened to this run's files, the queue goes on
            pass
        finally:
            with self._cond:
                self._running.pop(run_dir, None)
                self._cond.notify_all()

    @staticmethod
    def _finish(run_dir: Path, code: int) -> None:
        runs.remove_partial_files(run_dir)  # e.g. a half-written adapter of a worker killed while saving
        state = runs.status(run_dir).get("state")
        if state in ("done", "stopped", "failed"):
            return
        if code < 0 and -code == 9:
            reason = f"The training worker was killed (signal 9), most often for running out of memory. {MEMORY_HINT}"
        elif code < 0:
            reason = f"The training worker died from signal {-code}."
        else:
            reason = f"The training worker exited with code {code} before finishing."
        _record_failure(run_dir, reason)


def _record_failure(run_dir: Path, reason: str) -> None:
    try:
        runs.append_log(run_dir, {"event": "error", "message": reason})
    except ExplorerError:
        pass  # the status below still says why, if the disk lets us write it at all
    runs.set_status(run_dir, "failed", error=reason)
