"""Export a run's merged model as a safetensors folder in models_cache (a runnable model from then on).

The folder is written under a temporary name and renamed, so a killed export never leaves a folder the
registry would list. It holds what transformers' save_pretrained writes (config.json, safetensors,
generation config), the tokenizer, and explorer_export.json saying where it came from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from . import variants


def export_name(run_id: str) -> str:
    return f"merged-{run_id}"


def export_merged(run_id: str) -> Path:
    """Save the merged model of a run into models_cache/merged-<run-id>/ (replacing an older export)."""
    s = variants.session(run_id)
    if s.merged is None:
        raise ExplorerError(f"Run {run_id} used {s.run.method.title}, which cannot merge: "
                            f"{s.run.method.merge_reason}")
    cache = settings.models_cache()
    target = cache / export_name(run_id)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=cache))
        try:
            with s.lock:
                s.merged.save_pretrained(tmp, safe_serialization=True)
            s.tokenizer.save_pretrained(tmp)
            (tmp / "explorer_export.json").write_text(json.dumps(
                {"run_id": run_id, "method": s.run.method.name, "base_model": s.run.config.model,
                 "dataset": s.run.config.dataset}, indent=2))
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as error:
        raise ExplorerError(f"Could not write the merged model to {cache} ({error.strerror or error}): free some "
                            "disk space or make models_cache writable. Nothing was half-written.") from None
    return target


def zip_export(folder: Path) -> Path:
    """One zip of an exported folder (stored, not compressed: weights do not compress), for download."""
    target = folder.parent / f"{folder.name}.zip"
    fd, tmp = tempfile.mkstemp(dir=folder.parent, prefix=".tmp-", suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
            for file in sorted(folder.iterdir()):
                archive.write(file, f"{folder.name}/{file.name}")
        os.replace(tmp, target)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise ExplorerError(f"Could not write {target.name} ({error.strerror or error}).") from None
    return target
