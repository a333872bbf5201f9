"""Worker process entry point: ``python -m explorer.train.worker RUN_DIR`` trains one queued run.

Everything it learns goes to the run folder (explorer.train.lifecycle.execute): events to log.jsonl,
the final state to status.json. It runs at a lower CPU priority than the web server, so pages stay
responsive while a run trains.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

WORKER_NICE = 10  # below the web server's CPU priority: pages stay responsive while a run trains


def main(run_dir: Path) -> int:
    from .lifecycle import execute

    return 0 if execute(run_dir).state != "failed" else 1


if __name__ == "__main__":
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass
    sys.exit(main(Path(sys.argv[1])))
