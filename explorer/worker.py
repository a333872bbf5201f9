"""Worker process entry point: ``python -m explorer.worker RUN_DIR`` trains one run.

Everything it learns goes to the run folder: events to log.jsonl, the final state to status.json.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(run_dir: Path) -> int:
    from . import runs, training
    from .errors import ExplorerError
    from .jobs import MEMORY_HINT

    saved = runs.read_json(run_dir / "settings.json", {})
    runs.set_status(run_dir, "running", pid=os.getpid())
    try:
        config = training.TrainConfig.parse(saved.get("config", {}))
        summary = training.train(config, saved.get("options", {}), run_dir,
                                 on_event=lambda event: runs.append_log(run_dir, event),
                                 should_stop=lambda: (run_dir / "STOP").exists())
    except ExplorerError as error:
        return _fail(run_dir, str(error))
    except MemoryError:
        return _fail(run_dir, f"Out of memory. {MEMORY_HINT}")
    except Exception as error:  # the run fails; the message says what happened, the log keeps the details
        message = str(error)
        if "out of memory" in message.lower():
            return _fail(run_dir, f"Out of memory ({message.splitlines()[0][:200]}). {MEMORY_HINT}")
        runs.append_log(run_dir, {"event": "traceback", "text": traceback.format_exc()})
        return _fail(run_dir, f"Training failed: {type(error).__name__}: {message[:300]}")
    runs.append_log(run_dir, {"event": "done", **summary})
    runs.set_status(run_dir, "stopped" if summary["stopped"] else "done")
    return 0


def _fail(run_dir: Path, message: str) -> int:
    from . import runs

    runs.append_log(run_dir, {"event": "error", "message": message})
    runs.set_status(run_dir, "failed", error=message)
    return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
