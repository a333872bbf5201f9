"""Run folders in models_cache/runs/<run-id>/: settings, status, log.jsonl, summary and the adapter.

Every file is written to a temporary name and moved into place with os.replace; the adapter folder is
written whole under a temporary name and renamed. A run killed mid-save never leaves files that load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

from . import settings
from .errors import ExplorerError

RUN_ID = re.compile(r"^\d{8}-\d{6}-[a-z0-9]+-[0-9a-f]{6}$")
ADAPTER_DIR = "adapter"


def runs_dir() -> Path:
    folder = settings.runs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def new_run_id(method: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{re.sub('[^a-z0-9]', '', method.lower())}-{uuid.uuid4().hex[:6]}"


def run_path(run_id: str) -> Path:
    """The folder of a run the app made; anything else (paths, '..', made-up ids) is refused."""
    run_id = (run_id or "").strip()
    if not RUN_ID.match(run_id):
        raise ExplorerError(f"'{run_id}' is not a run id made by PEFT Explorer.")
    folder = runs_dir() / run_id
    if not folder.is_dir() or folder.is_symlink():
        raise ExplorerError(f"There is no run '{run_id}'.")
    return folder


def write_json(path: Path, value) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def append_log(run_dir: Path, event: dict) -> None:
    with (run_dir / "log.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"time": time.time(), **event}, default=str) + "\n")


def read_log(run_dir: Path) -> list[dict]:
    events = []
    try:
        lines = (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return events
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line being written right now
    return events


def save_artifacts(model, run_dir: Path, config, options_values: dict, uses_peft: bool) -> None:
    """The adapter (PEFT's standard files, or the project's own safetensors) and the run's settings."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-adapter-", dir=run_dir))
    try:
        if uses_peft:
            model.save_pretrained(tmp, safe_serialization=True)
        else:
            from .methods.own_modules import save_trainable

            save_trainable(model, str(tmp), {"method": config.method, "model": config.model,
                                             "options": options_values})
        target = run_dir / ADAPTER_DIR
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def create_run(config, options_values: dict) -> Path:
    run_dir = runs_dir() / new_run_id(config.method)
    run_dir.mkdir()
    write_json(run_dir / "settings.json", {"config": dataclasses.asdict(config), "options": options_values})
    set_status(run_dir, "queued")
    return run_dir


def set_status(run_dir: Path, state: str, **extra) -> None:
    write_json(run_dir / "status.json", {"state": state, "time": time.time(), **extra})


def status(run_dir: Path) -> dict:
    return read_json(run_dir / "status.json", {"state": "unknown"})


def list_runs() -> list[dict]:
    """Every run, newest first, with its settings, status and summary (missing parts tolerated)."""
    rows = []
    for folder in sorted(runs_dir().iterdir(), reverse=True):
        if not RUN_ID.match(folder.name) or not folder.is_dir() or folder.is_symlink():
            continue  # a symlink is never a run the app made: never read or write through it
        rows.append({"run_id": folder.name, "settings": read_json(folder / "settings.json", {}),
                     "status": status(folder), "summary": read_json(folder / "summary.json", {}),
                     "has_adapter": (folder / ADAPTER_DIR).is_dir()})
    return rows


def mark_interrupted() -> int:
    """After a server restart no worker is alive: runs left queued or running were interrupted."""
    count = 0
    for folder in runs_dir().iterdir():
        state = status(folder) if RUN_ID.match(folder.name) and not folder.is_symlink() else {}
        if state.get("state") == "queued" or (state.get("state") == "running" and not _alive(state.get("pid"))):
            set_status(folder, "interrupted", error="The server stopped while this run was queued or running.")
            count += 1
    return count


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_run(run_id: str) -> None:
    shutil.rmtree(run_path(run_id))


def zip_adapter(run_id: str) -> Path:
    """A zip of the run's adapter folder and settings, for download."""
    folder = run_path(run_id)
    adapter = folder / ADAPTER_DIR
    if not adapter.is_dir():
        raise ExplorerError(f"Run {run_id} has no saved adapter.")
    target = folder / f"{run_id}-adapter.zip"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".zip")
    os.close(fd)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(adapter.iterdir()):
            archive.write(file, f"{ADAPTER_DIR}/{file.name}")
        for name in ("settings.json", "summary.json"):
            if (folder / name).exists():
                archive.write(folder / name, name)
    os.replace(tmp, target)
    return target
