"""Worker process of a race: ``python -m explorer.race.worker RACE_DIR`` scores the base model once and trains
every queued entrant in turn (explorer.race.runner.run), leaving the web server a core as a training worker
does (explorer.train.worker.share_cpu)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

if __name__ == "__main__":
    from ..train.worker import share_cpu
    from .runner import worker_main

    share_cpu()
    sys.exit(worker_main(Path(sys.argv[1])))
