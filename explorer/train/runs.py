"""Run folders in models_cache/runs/<run-id>/: settings, status, log.jsonl, summary and the adapter, and the
``Run`` type every part of the app reads them through.

Status changes are not made here: explorer.train.lifecycle owns them (``lifecycle.change``).

Every file is written to a temporary name and moved into place with os.replace; the adapter folder is
written whole under a temporary name and renamed. A run killed mid-save never leaves files that load.
A full or read-only disk is an ExplorerError that says so, and leaves no temporary files behind.

Hosting: EXPLORER_DISK_BUDGET_GB caps the disk the runs use (checked before each new run), and
EXPLORER_DISK_POLICY says what happens past it: refuse new runs, or prune the oldest finished ones.
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
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from ..methods import METHODS
from .config import TrainConfig

RUN_ID = re.compile(r"^\d{8}-\d{6}-[a-z0-9]+-[0-9a-f]{6}$")
ADAPTER_DIR = "adapter"
TMP_PREFIX = ".tmp-"
STOP_FILE = "STOP"  # in a run's or a race's folder: asked to stop (the worker, the race runner and Ray read it)
# No worker will write to these again. "diverged": trained, but its loss blew up (explorer/train/divergence.py).
FINISHED = ("done", "diverged", "stopped", "failed", "cancelled", "interrupted")
UPLOADS_DIR = "uploads"  # models_cache/uploads/<hash>/<original file name>.jsonl: uploaded datasets


@dataclass
class Run:
    """One run as its folder holds it. The runs table, Compare, Learn, the composition experiment and the
    CLI all read runs through this type (``list_runs``, ``read_run``, ``open_run``)."""

    folder: Path
    settings: dict       # settings.json as saved: {"config": {...}, "options": {...}} ({} when unreadable)
    status: dict         # status.json: {"state", "time", "error"?, "pid"?}
    summary: dict        # summary.json once the run has finished ({} before)
    has_adapter: bool

    @property
    def run_id(self) -> str:
        return self.folder.name

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def error(self) -> str:
        return self.status.get("error", "")

    @cached_property
    def config(self) -> TrainConfig | None:
        """The parsed training settings (saved before a cap was lowered: still parsed), None when unreadable."""
        try:
            return TrainConfig.parse(self.settings["config"], caps=False)
        except (ExplorerError, KeyError, TypeError, AttributeError):
            return None

    @property
    def options(self) -> dict:
        options = self.settings.get("options") if isinstance(self.settings, dict) else None
        return options if isinstance(options, dict) else {}

    @property
    def method(self):
        return METHODS[self.config.method] if self.config else None

    @property
    def dataset_label(self) -> str:
        """A bundled task's name, or the file name an upload had (not the hash it is stored under)."""
        return dataset_label(self.config.dataset) if self.config else ""

    @property
    def steps_trained(self) -> int:
        steps = self.summary.get("steps")
        return steps if isinstance(steps, int) else 0


def dataset_label(dataset: str) -> str:
    path = Path(str(dataset))
    return path.stem if path.suffix else str(dataset)


def not_writable(path: Path, error: BaseException) -> ExplorerError:
    """The message for a write that failed: full disk, read-only folder, no permission."""
    reason = getattr(error, "strerror", None) or str(error)
    if isinstance(error, FileNotFoundError):
        return ExplorerError(f"Could not write {path}: its folder no longer exists (was the run deleted?).")
    return ExplorerError(f"Could not write {path}: the disk is full or not writable ({reason}). Free some space "
                         "(delete runs in the Fine-tune tab) or ask whoever runs this server.")


def runs_dir() -> Path:
    folder = settings.runs_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise not_writable(folder, error) from None
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
    """Write whole or not at all: a temporary file, fsync'd, then moved over ``path``. On a full or
    read-only disk ``path`` keeps its old content, the temporary file is removed, and the error says why."""
    text = json.dumps(value, indent=2, default=str)  # before touching the disk: a bad value writes nothing
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=".json")
    except OSError as error:
        raise not_writable(path, error) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        _discard(tmp, error, path)
        raise


def _discard(tmp: str, error: BaseException, path: Path) -> None:
    """A write failed: remove its temporary file; a disk error becomes a clear message about ``path``."""
    try:
        os.unlink(tmp)
    except OSError:
        pass
    if isinstance(error, OSError):
        raise not_writable(path, error) from None


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def append_log(run_dir: Path, event: dict) -> None:
    """One event per line; a line cut short by a full disk or a kill is skipped by read_log."""
    line = json.dumps({"time": time.time(), **event}, default=str) + "\n"
    try:
        with (run_dir / "log.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError as error:
        raise not_writable(run_dir / "log.jsonl", error) from None


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


def save_artifacts(model, run_dir: Path, config, options_values: dict, uses_peft: bool, save_kwargs: dict | None = None,
                   extra=None) -> None:
    """The adapter (PEFT's standard files, or the project's own safetensors) and the run's settings.

    ``save_kwargs``: extra arguments of PEFT's save_pretrained (a method's ``before_training`` hook returns them);
    ``extra(folder)``: writes more files into the adapter folder before it moves into place (a head run's
    comparison model)."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "adapter-", dir=run_dir))
    except OSError as error:
        raise not_writable(run_dir / ADAPTER_DIR, error) from None
    try:
        if uses_peft:
            model.save_pretrained(tmp, safe_serialization=True, **(save_kwargs or {}))
        else:
            from ..methods.own_modules import save_trainable

            save_trainable(model, str(tmp), {"method": config.method, "model": config.model,
                                             "options": options_values})
        if extra is not None:
            extra(tmp)
        target = run_dir / ADAPTER_DIR
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError) or "No space left" in str(error):  # safetensors wraps some OS errors
            raise not_writable(run_dir / ADAPTER_DIR, error) from None
        raise


def copy_adapter(source: Path, run_dir: Path) -> None:
    """An adapter saved elsewhere (PEFT's adapter_config.json and safetensors) copied into the run whole: a
    temporary folder renamed into place. Only safetensors and JSON files travel: never a pickle."""
    files = [p for p in sorted(Path(source).iterdir()) if p.is_file() and not p.is_symlink()
             and p.suffix in (".safetensors", ".json") and p.name != "metrics.json"]
    try:
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "adapter-", dir=run_dir))
    except OSError as error:
        raise not_writable(run_dir / ADAPTER_DIR, error) from None
    try:
        for file in files:
            shutil.copyfile(file, tmp / file.name)
        tmp.rename(run_dir / ADAPTER_DIR)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError):
            raise not_writable(run_dir / ADAPTER_DIR, error) from None
        raise


def new_run_folder(config, options_values: dict, first_status: dict) -> Path:
    """A new run folder with its settings and first status (explorer.train.lifecycle.create decides which),
    after the disk budget check. A folder that could not be written whole is removed again: no run
    without its settings and status."""
    enforce_disk_budget()
    run_dir = runs_dir() / new_run_id(config.method)
    try:
        run_dir.mkdir()
    except OSError as error:
        raise not_writable(run_dir, error) from None
    try:
        write_json(run_dir / "settings.json", {"config": dataclasses.asdict(config), "options": options_values})
        write_json(run_dir / "status.json", first_status)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def scratch_folder(run_dir: Path) -> Path:
    """Where a trainer may keep files it needs until saving (not created here). Its name is a partial file's,
    so a killed worker's leftovers go with the others (``remove_partial_files``)."""
    return run_dir / (TMP_PREFIX + "scratch")


def remove_scratch(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def remove_partial_files(run_dir: Path) -> None:
    """Temporary files and folders a killed writer left behind (they never load; they only use disk)."""
    try:
        leftovers = [p for p in run_dir.iterdir() if p.name.startswith(TMP_PREFIX)]
    except OSError:
        return
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                pass


# --------------------------------------------------------------------------- disk budget


def disk_usage_bytes(folder: Path | None = None) -> int:
    """Bytes in the files under ``folder`` (default: the runs folder); symlinks are not followed."""
    total = 0
    for root, _, files in os.walk(folder or runs_dir()):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed meanwhile
    return total


def _age_key(folder: Path) -> tuple[str, float]:
    """Run ids start with their creation time to the second; settings.json's time orders within it."""
    try:
        written = (folder / "settings.json").stat().st_mtime
    except OSError:
        written = 0.0
    return folder.name[:15], written


def enforce_disk_budget() -> list[str]:
    """Before a new run: within EXPLORER_DISK_BUDGET_GB, nothing to do; over it, refuse
    (EXPLORER_DISK_POLICY=refuse) or delete the oldest finished runs until under budget
    (prune-oldest; queued and running runs are never deleted). Returns the pruned run ids."""
    budget = settings.disk_budget_bytes()
    if not budget:
        return []
    used = disk_usage_bytes()
    pruned: list[str] = []
    if used > budget and settings.disk_policy() == "prune-oldest":
        for folder in sorted(runs_dir().iterdir(), key=_age_key):  # oldest first
            if used <= budget:
                break
            if (not RUN_ID.match(folder.name) or folder.is_symlink() or not folder.is_dir()
                    or status(folder).get("state") not in FINISHED):
                continue
            size = disk_usage_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                used -= size
                pruned.append(folder.name)
    if used > budget:
        still = " even after deleting the oldest finished runs" if settings.disk_policy() == "prune-oldest" else ""
        raise ExplorerError(f"The saved training runs use {used / 1e9:.3g} GB, over this server's disk budget of "
                            f"{budget / 1e9:.3g} GB (EXPLORER_DISK_BUDGET_GB){still}: delete runs in the Fine-tune "
                            "tab, or ask whoever runs this server, then try again.")
    return pruned


def status(run_dir: Path) -> dict:
    return read_json(run_dir / "status.json", {"state": "unknown"})


def read_run(folder: Path) -> Run:
    """A run's folder read as it is now (missing or corrupt parts tolerated)."""
    saved = read_json(folder / "settings.json", {})
    summary = read_json(folder / "summary.json", {})
    return Run(folder, saved if isinstance(saved, dict) else {}, status(folder),
               summary if isinstance(summary, dict) else {}, (folder / ADAPTER_DIR).is_dir())


def run_folders() -> list[Path]:
    """Every run folder, newest first; a symlink is never a run the app made: never read or write through it."""
    return [folder for folder in sorted(runs_dir().iterdir(), reverse=True)
            if RUN_ID.match(folder.name) and folder.is_dir() and not folder.is_symlink()]


def list_runs() -> list[Run]:
    """Every run, newest first."""
    return [read_run(folder) for folder in run_folders()]


def open_run(run_id: str, need_adapter: bool = True) -> Run:
    """A run whose settings are valid (and, by default, whose adapter was saved); clear messages otherwise."""
    run = read_run(run_path(run_id))
    if not isinstance(run.settings.get("config"), dict):
        raise ExplorerError(f"Run {run.run_id} has no readable settings.json (missing or corrupt), so its base "
                            "model and method are unknown.")
    try:
        TrainConfig.parse(run.settings["config"], caps=False)  # saved before a cap was lowered: still opens
        run.method.parse_options(run.options)
    except (ExplorerError, TypeError, AttributeError) as error:
        raise ExplorerError(f"Run {run.run_id}'s settings.json is not valid: {error}") from None
    if need_adapter and not run.has_adapter:
        raise ExplorerError(f"Run {run.run_id} has no saved adapter (its state is '{run.state}'): only runs that "
                            "trained at least one step can be compared.")
    return run


def alive(pid) -> bool:
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
    """Remove a finished run's folder (a queued or running one must be stopped first)."""
    folder = run_path(run_id)
    state = status(folder).get("state")
    if state in ("queued", "running"):
        raise ExplorerError(f"Run {run_id} is still {state}: stop it first.")
    shutil.rmtree(folder)


def zip_adapter(run_id: str) -> Path:
    """A zip of the run's adapter folder and settings, for download (explorer.train.model_card.zip_with_card
    writes the filled model card first)."""
    folder = run_path(run_id)
    adapter = folder / ADAPTER_DIR
    if not adapter.is_dir():
        raise ExplorerError(f"Run {run_id} has no saved adapter.")
    target = folder / f"{run_id}-adapter.zip"
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=".zip")
    except OSError as error:
        raise not_writable(target, error) from None
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(adapter.iterdir()):
                archive.write(file, f"{ADAPTER_DIR}/{file.name}")
            for name in ("settings.json", "summary.json"):
                if (folder / name).exists():
                    archive.write(folder / name, name)
        os.replace(tmp, target)
    except BaseException as error:
        _discard(tmp, error, target)
        raise
    return target
