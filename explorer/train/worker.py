"""Worker process entry point: ``python -m explorer.train.worker RUN_DIR`` trains one run.

Everything it learns goes to the run folder: events to log.jsonl, the final state to status.json.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError (CPU), torch.OutOfMemoryError (CUDA, a RuntimeError) or a library's "out of memory"."""
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or "out of memory" in str(error).lower())


def out_of_memory_message(error: BaseException, config=None) -> str:
    from .jobs import MEMORY_HINT

    detail = (str(error).strip().splitlines() or [""])[0][:200]
    where = ""
    if config is not None:
        where = (f" at batch size {config.batch_size}, sequence length {config.seq_len}, gradient checkpointing "
                 f"{'on' if config.gradient_checkpointing else 'off'}, method {config.method}")
    return f"Out of memory{where}{f' ({detail})' if detail else ''}. {MEMORY_HINT}"


def main(run_dir: Path) -> int:
    from . import runs, loop as training
    from ..errors import ExplorerError

    saved = runs.read_json(run_dir / "settings.json", {})
    runs.set_status(run_dir, "running", pid=os.getpid())
    config = None
    try:
        # The hosting caps were checked when the run was submitted; a cap lowered while it waited
        # in the queue does not fail it.
        config = training.TrainConfig.parse(saved.get("config", {}), caps=False)
        summary = training.train(config, saved.get("options", {}), run_dir,
                                 on_event=lambda event: runs.append_log(run_dir, event),
                                 should_stop=lambda: (run_dir / "STOP").exists())
    except ExplorerError as error:
        return _fail(run_dir, str(error))
    except Exception as error:  # the run fails; the message says what happened, the log keeps the details
        if is_out_of_memory(error):
            return _fail(run_dir, out_of_memory_message(error, config))
        _log(run_dir, {"event": "traceback", "text": traceback.format_exc()})
        return _fail(run_dir, f"Training failed: {type(error).__name__}: {str(error)[:300]}")
    runs.append_log(run_dir, {"event": "done", **summary})
    runs.set_status(run_dir, "stopped" if summary["stopped"] else "done")
    return 0


def _log(run_dir: Path, event: dict) -> None:
    from . import runs

    try:
        runs.append_log(run_dir, event)
    except Exception:  # a full disk must not hide the reason the run failed
        pass


def _fail(run_dir: Path, message: str) -> int:
    from . import runs

    _log(run_dir, {"event": "error", "message": message})
    runs.set_status(run_dir, "failed", error=message)  # if even this fails, the server reports the exit code
    return 1


WORKER_NICE = 10  # below the web server's CPU priority: pages stay responsive while a run trains


if __name__ == "__main__":
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass
    sys.exit(main(Path(sys.argv[1])))
