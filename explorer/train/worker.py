"""Worker process entry point: ``python -m explorer.train.worker RUN_DIR`` trains one queued run.

Everything it learns goes to the run folder (explorer.train.lifecycle.execute): events to log.jsonl,
the final state to status.json. It leaves the web server a core (``share_cpu``), so pages stay responsive
while a run trains.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def share_cpu() -> tuple[int, int]:
    """Train with EXPLORER_WORKER_THREADS torch threads (default: the cores less one) at a CPU priority
    EXPLORER_WORKER_NICE lower than the server's (default 0: the same). A lower priority alone leaves the
    server waiting whenever the training's threads hold every core (issue 18: p95 2.8 s at nice 19), so the
    worker keeps a core free; with that core free, a lower priority only cost the training (settings.py).
    Returns (threads, niceness) as this process now runs."""
    import torch

    from .. import settings

    threads, nice = settings.worker_threads(), settings.worker_nice()
    torch.set_num_threads(threads)
    try:
        niceness = os.nice(nice)
    except OSError:  # a priority the system does not allow: train anyway
        niceness = os.nice(0)
    return torch.get_num_threads(), niceness


def main(run_dir: Path) -> int:
    from .lifecycle import execute

    return 0 if execute(run_dir).state != "failed" else 1


if __name__ == "__main__":
    share_cpu()
    sys.exit(main(Path(sys.argv[1])))
