"""Training jobs: one worker process at a time, a queue behind it, stop and crash handling.

The web server never trains: it starts ``python -m explorer.worker RUN_DIR`` and follows the run
through files (status.json, log.jsonl), as LLaMA-Factory's web UI does. A crash, an out-of-memory
kill or a stop ends the worker, never the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

from . import runs, settings
from .errors import ExplorerError

MEMORY_HINT = ("Lower the batch size or the sequence length, turn on gradient checkpointing, or use QLoRA.")


class JobManager:
    def __init__(self, max_queue: int = 8):
        self.max_queue = max_queue
        self._queue: deque[Path] = deque()
        self._current: tuple[Path, subprocess.Popen] | None = None
        self._cond = threading.Condition()
        self.interrupted = runs.mark_interrupted()
        threading.Thread(target=self._loop, name="explorer-jobs", daemon=True).start()

    def submit(self, config, options_values: dict) -> Path:
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise ExplorerError(f"The training queue is full ({self.max_queue} runs waiting); try again later.")
            run_dir = runs.create_run(config, options_values)
            self._queue.append(run_dir)
            self._cond.notify()
        return run_dir

    def position(self, run_dir: Path) -> int | None:
        """0 while running, 1.. while waiting, None once finished."""
        with self._cond:
            if self._current and self._current[0] == run_dir:
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
        (run_dir / "STOP").touch()  # the worker checks before every step

    def busy(self) -> bool:
        with self._cond:
            return self._current is not None or bool(self._queue)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                run_dir = self._queue.popleft()
                process = subprocess.Popen([sys.executable, "-m", "explorer.worker", str(run_dir)],
                                           cwd=settings.REPO_ROOT, env=os.environ.copy(),
                                           stdout=subprocess.DEVNULL, stderr=(run_dir / "worker.err").open("wb"))
                self._current = (run_dir, process)
            code = process.wait()
            self._finish(run_dir, code)
            with self._cond:
                self._current = None

    @staticmethod
    def _finish(run_dir: Path, code: int) -> None:
        state = runs.status(run_dir).get("state")
        if state in ("done", "stopped", "failed"):
            return
        if code < 0 and -code == 9:
            reason = f"The training worker was killed (signal 9), most often for running out of memory. {MEMORY_HINT}"
        elif code < 0:
            reason = f"The training worker died from signal {-code}."
        else:
            reason = f"The training worker exited with code {code} before finishing."
        runs.set_status(run_dir, "failed", error=reason)
        runs.append_log(run_dir, {"event": "error", "message": reason})
