"""The local backend: each job is a worker process on this machine (the default).

The web server never trains: it starts the job's command (``python -m explorer.train.worker RUN_DIR``) and
follows the run through its files, as LLaMA-Factory's web UI does. A crash, an out-of-memory kill or a stop
ends the worker, never the server.
"""

from __future__ import annotations

import os
import subprocess

from ... import settings
from .base import Ended, Job


class LocalHandle:
    def __init__(self, process: subprocess.Popen):
        self.process = process

    def wait(self) -> Ended:
        return Ended(self.process.wait())


class LocalBackend:
    name = "local"
    recheck_seconds = None  # the slots never change: the queue waits until a job ends

    def check(self) -> None:
        pass

    def slots(self) -> int:
        return settings.UNCAPPED  # EXPLORER_MAX_CONCURRENT_JOBS caps them

    def start(self, job: Job) -> LocalHandle:
        with (job.log_dir / "worker.err").open("wb") as err:  # the child keeps its own copy of the descriptor
            return LocalHandle(subprocess.Popen(job.command, cwd=settings.REPO_ROOT, env=os.environ.copy(),
                                                stdout=subprocess.DEVNULL, stderr=err))
