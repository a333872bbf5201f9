"""A run's life, in one place: every status change of every run goes through ``change``.

    create ──▶ queued ──▶ running ──▶ done | diverged | stopped | failed
                 │            └──────▶ interrupted   (the server restarted and no worker is alive)
                 └──▶ cancelled | failed | interrupted

Whoever trains — the worker process (on this machine or on a Ray node, explorer.train.backends), the CLI,
the composition demo and the race — calls ``execute``: it marks the run running, trains with the run-folder
logger as one callback among the caller's (minGPT's trainer callbacks), and records how it ended, with the
out-of-memory hint when memory ran out (LLaMA-Factory's launch → monitor → finalise, without its shared flags).
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ExplorerError
from . import runs

ALLOWED = {  # state -> the states a run may move to from it; a finished run (runs.FINISHED) moves no more
    "queued": {"running", "cancelled", "failed", "interrupted"},
    "running": {"done", "diverged", "stopped", "failed", "interrupted"},
}
MEMORY_HINT = ("Lower the batch size (batch_size) or the sequence length (seq_len), turn on gradient checkpointing "
               "(gradient_checkpointing), or use QLoRA (method qlora).")
STOP_FILE = runs.STOP_FILE


def change(run_dir: Path, state: str, **extra) -> None:
    """Move a run to ``state`` (with extra fields such as error or pid), if its life allows it from where it
    is: a finished run never changes again, whoever writes late (a worker killed mid-save, a stop after
    the end). A refused change is silent: the run keeps the state that happened first."""
    current = runs.status(run_dir).get("state")  # "unknown" when status.json is missing or unreadable
    if current in runs.FINISHED or state not in ALLOWED.get(current, ALLOWED["queued"] | ALLOWED["running"]):
        return
    runs.write_json(run_dir / "status.json", {"state": state, "time": time.time(), **extra})


def create(config, options_values: dict) -> Path:
    """A new run, queued (its settings saved, the disk budget checked)."""
    return runs.new_run_folder(config, options_values, {"state": "queued", "time": time.time()})


def request_stop(run_dir: Path) -> None:
    """Ask the run's trainer to stop after its current step (it saves what it trained so far)."""
    try:
        (run_dir / STOP_FILE).touch()
    except OSError as error:
        raise runs.not_writable(run_dir / STOP_FILE, error) from None


def stop_requested(run_dir: Path) -> bool:
    return (run_dir / STOP_FILE).exists()


def fail(run_dir: Path, reason: str) -> None:
    """The run failed: the reason goes to its log (if the disk allows) and its status."""
    folder_log(run_dir, quiet=True)({"event": "error", "message": reason})
    change(run_dir, "failed", error=reason)


def folder_log(run_dir: Path, quiet: bool = False) -> Callable[[dict], None]:
    """The callback that appends every event to the run's log.jsonl. ``quiet``: a write that fails (a full
    disk) is skipped, for messages that must not hide the reason a run failed."""
    def log(event: dict) -> None:
        try:
            runs.append_log(run_dir, event)
        except ExplorerError:
            if not quiet:
                raise
    return log


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError (CPU), torch.OutOfMemoryError (CUDA, a RuntimeError) or a library's "out of memory"."""
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or "out of memory" in str(error).lower())


def out_of_memory_message(error: BaseException, config=None) -> str:
    detail = (str(error).strip().splitlines() or [""])[0][:200]
    where = ""
    if config is not None:
        where = (f" at batch size {config.batch_size}, sequence length {config.seq_len}, gradient checkpointing "
                 f"{'on' if config.gradient_checkpointing else 'off'}, method {config.method}")
    return f"Out of memory{where}{f' ({detail})' if detail else ''}. {MEMORY_HINT}"


@dataclass
class Outcome:
    state: str                 # done, diverged, stopped or failed
    summary: dict | None       # the run's summary when it trained to the end or was stopped
    error: str = ""


def execute(run_dir: Path, callbacks: Iterable[Callable[[dict], None]] = (),
            should_stop: Callable[[], bool] | None = None) -> Outcome:
    """Train a queued run in this process, from its saved settings, and record how it ended.

    Every event goes to the run's log.jsonl first, then to each callback. ``should_stop`` defaults to the
    run's STOP file (``request_stop``), so a run started anywhere can be stopped from the page."""
    from .config import TrainConfig
    from .loop import train

    saved = runs.read_json(run_dir / "settings.json", {})
    change(run_dir, "running", pid=os.getpid())
    log, extra = folder_log(run_dir), list(callbacks)

    def on_event(event: dict) -> None:
        log(event)
        for callback in extra:
            callback(event)

    config = None
    try:
        # The hosting caps were checked when the run was submitted; a cap lowered while it waited
        # in the queue does not fail it.
        config = TrainConfig.parse(saved.get("config", {}), caps=False)
        summary = train(config, saved.get("options", {}), run_dir, on_event=on_event,
                        should_stop=should_stop or (lambda: stop_requested(run_dir)))
    except ExplorerError as error:
        return _failed(run_dir, str(error))
    except Exception as error:  # the run fails; the message says what happened, the log keeps the details
        if is_out_of_memory(error):
            return _failed(run_dir, out_of_memory_message(error, config))
        folder_log(run_dir, quiet=True)({"event": "traceback", "text": traceback.format_exc()})
        return _failed(run_dir, f"Training failed: {type(error).__name__}: {str(error)[:300]}")
    except BaseException:  # Ctrl-C in the CLI: nothing was saved, and no worker will finish the run
        change(run_dir, "interrupted", error="Training was interrupted before it finished.")
        raise
    log({"event": "done", **summary})
    # A diverged run ends by itself, like a done one, yet "done" would tell its user it worked.
    state = "stopped" if summary["stopped"] else "diverged" if summary.get("diverged") else "done"
    change(run_dir, state, **({"reason": summary["divergence"]} if state == "diverged" else {}))
    return Outcome(state, summary)


def _failed(run_dir: Path, reason: str) -> Outcome:
    fail(run_dir, reason)
    return Outcome("failed", None, reason)


def worker_exited(run_dir: Path, code: int) -> None:
    """A worker process ended: if it could not record how its run ended, record it here from its exit."""
    runs.remove_partial_files(run_dir)  # e.g. a half-written adapter of a worker killed while saving
    if runs.status(run_dir).get("state") in runs.FINISHED:
        return
    if code < 0 and -code == 9:
        reason = f"The training worker was killed (signal 9), most often for running out of memory. {MEMORY_HINT}"
    elif code < 0:
        reason = f"The training worker died from signal {-code}."
    else:
        reason = f"The training worker exited with code {code} before finishing."
    fail(run_dir, reason)


def worker_lost(run_dir: Path, reason: str) -> None:
    """A job ended without an exit of its own (its Ray worker process or node died, the connection to the
    cluster was lost): a run it had not finished failed, with the reason."""
    runs.remove_partial_files(run_dir)
    if runs.status(run_dir).get("state") not in runs.FINISHED:
        fail(run_dir, reason)


def job_ended(run_dir: Path, code: int | None, reason: str = "") -> None:
    """A job that held this run ended (explorer.train.backends.Ended): its exit code, or why it had none."""
    if code is None:
        worker_lost(run_dir, reason or "The training job ended without an exit code.")
    else:
        worker_exited(run_dir, code)


def interrupt(run_dir: Path, reason: str) -> None:
    """Whoever waited for the run gave up on it (Ctrl-C in the command line): it will not finish."""
    change(run_dir, "interrupted", error=reason)


def record_import(config, options_values: dict, adapter: Path, summary: dict) -> Path:
    """A run trained elsewhere (a recipe on the user's GPUs) brought in as a finished run: its folder, its
    adapter copied in whole, its summary, and the states a run passes through (queued, running, done)."""
    run_dir = create(config, options_values)
    try:
        change(run_dir, "running", pid=os.getpid())
        runs.copy_adapter(adapter, run_dir)
        runs.write_json(run_dir / "summary.json", {"run_id": run_dir.name, "run_dir": str(run_dir), **summary})
        folder_log(run_dir)({"event": "imported", "source": str(adapter)})
    except BaseException as error:
        fail(run_dir, f"The import did not finish: {error}")
        raise
    change(run_dir, "done", imported_from=str(adapter))
    return run_dir


def cancel(run_dir: Path) -> None:
    change(run_dir, "cancelled")


def mark_interrupted() -> int:
    """After a server restart no worker is alive: runs left queued or running were interrupted."""
    count = 0
    for folder in runs.run_folders():
        state = runs.status(folder)
        if state.get("state") == "queued" or (state.get("state") == "running" and not runs.alive(state.get("pid"))):
            try:
                change(folder, "interrupted", error="The server stopped while this run was queued or running.")
            except ExplorerError:
                continue  # a read-only or full disk: the app still starts, the run keeps its old state
            runs.remove_partial_files(folder)
            count += 1
    return count
