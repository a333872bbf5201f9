"""A job's folders carried to a Ray node, and every change carried back, through Ray alone (no shared disk).

Server → node (``pack`` on the server, ``unpack`` on the node): the small files of each folder the job uses
(a run's settings.json and status.json, a race's race.json) and the dataset files their settings name, laid
out in a temporary folder as the server lays them out (runs/<run-id>/, races/<race-id>/), so the job's own
command runs there unchanged with EXPLORER_RUNS_DIR and EXPLORER_RACES_DIR pointing at them.

Node → server (``Watcher.poll`` on the node, ``Receiver.apply`` on the server): messages in the order that
keeps every reader of the server's folders safe, the order a local worker writes in:

1. folders (the adapter), in chunks, written under a temporary name and renamed into place only when whole;
2. whole files (summary.json, a race's base.json), each written atomically;
3. the new whole lines of append-only logs (log.jsonl, worker.err);
4. status changes, last: the server applies them through explorer.train.lifecycle.

Server paths in JSON text are translated both ways (a summary's run_dir names the server's run folder).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from ... import settings
from .. import runs

CHUNK_BYTES = 8 * 2**20          # one message's share of a large file (an adapter, a full fine-tune's weights)
PACK_LIMIT_BYTES = 64 * 2**20    # a folder's file larger than this is not sent to the node (none of a queued run's)
STOP_FILE = runs.STOP_FILE
STATUS_FILE = "status.json"
TEXT_SUFFIXES = (".json", ".jsonl", ".err")


def appends_only(name: str) -> bool:
    return name.endswith(".jsonl") or name == "worker.err"


@dataclass
class Bundle:
    """What a job needs on the node: its folders' small files and the dataset files they name."""

    folders: list[tuple[str, str, dict[str, bytes]]]   # (server path, "runs" | "races" | "other", {name: bytes})
    datasets: dict[str, bytes]                          # a settings' "dataset" value (a file path) -> its bytes


def _kind(folder: Path) -> str:
    if folder.parent == settings.runs_dir():
        return "runs"
    return "races" if folder.parent == settings.races_dir() else "other"


def _dataset_values(value) -> Iterator[str]:
    """Every "dataset" value found in a settings file (a run's config, a race's settings)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "dataset" and isinstance(item, str):
                yield item
            else:
                yield from _dataset_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _dataset_values(item)


def pack(folders: list[Path]) -> Bundle:
    """The job's folders as the node needs them (server side)."""
    packed, datasets = [], {}
    for folder in folders:
        files = {}
        for entry in sorted(folder.iterdir()):
            if (entry.is_file() and not entry.is_symlink() and not entry.name.startswith(runs.TMP_PREFIX)
                    and entry.stat().st_size <= PACK_LIMIT_BYTES):
                files[entry.name] = entry.read_bytes()
        for name, content in files.items():
            if name.endswith(".json"):
                try:
                    found = list(_dataset_values(json.loads(content)))
                except ValueError:
                    continue
                for value in found:
                    path = Path(value)
                    if path.is_absolute() and path.is_file() and value not in datasets:
                        datasets[value] = path.read_bytes()
        packed.append((str(folder), _kind(folder), files))
    return Bundle(packed, datasets)


def _escaped(text: str) -> str:
    return json.dumps(text)[1:-1]


@dataclass
class Layout:
    """Where the job's folders and datasets lie on the node, and how to translate paths either way."""

    root: Path
    folders: dict[str, Path]       # server folder path -> node folder
    datasets: dict[str, str]       # server dataset value -> node file path

    def to_node(self, text: str) -> str:
        return _translate(text, {k: str(v) for k, v in self.folders.items()}, self.datasets)

    def to_server(self, text: str) -> str:
        return _translate(text, {str(v): k for k, v in self.folders.items()},
                          {v: k for k, v in self.datasets.items()})

    def argument(self, arg: str) -> str:
        """A command-line argument on the node: a folder or dataset path of the server's becomes the node's."""
        if arg in self.folders:
            return str(self.folders[arg])
        return self.datasets.get(arg, arg)

    def env(self) -> dict[str, str]:
        return {"EXPLORER_RUNS_DIR": str(self.root / "runs"), "EXPLORER_RACES_DIR": str(self.root / "races")}


def _translate(text: str, folders: dict[str, str], values: dict[str, str]) -> str:
    """Folder paths as prefixes (a path inside a run folder moves with it); dataset paths only as whole JSON
    strings (a short relative name must never match inside other text). Longest first."""
    for source in sorted(folders, key=len, reverse=True):
        text = text.replace(_escaped(source), _escaped(folders[source]))
    for source in sorted(values, key=len, reverse=True):
        text = text.replace(json.dumps(source), json.dumps(values[source]))
    return text


def unpack(bundle: Bundle, root: Path) -> Layout:
    """Lay the bundle out under ``root`` (node side)."""
    layout = Layout(root, {}, {})
    for i, value in enumerate(bundle.datasets):
        target = root / "data" / str(i) / (Path(value).name or "data.jsonl")
        layout.datasets[value] = str(target)
    for i, (server_path, kind, _) in enumerate(bundle.folders):
        name = Path(server_path).name
        layout.folders[server_path] = root / kind / (name if kind != "other" else f"{i}-{name}")
    for value, content in bundle.datasets.items():
        target = Path(layout.datasets[value])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    for server_path, _, files in bundle.folders:
        folder = layout.folders[server_path]
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            if name.endswith(TEXT_SUFFIXES):
                content = layout.to_node(content.decode("utf-8", "replace")).encode("utf-8")
            (folder / name).write_bytes(content)
    return layout


class Watcher:
    """Sees what changed in the node's folders since the last poll, as messages (node side)."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.seen: dict[tuple[str, str], tuple] = {}
        self.offsets: dict[tuple[str, str], int] = {}
        for key, folder in layout.folders.items():  # what was unpacked is already on the server
            for entry in folder.iterdir():
                if appends_only(entry.name):
                    self.offsets[(key, entry.name)] = entry.stat().st_size
                else:
                    self.seen[(key, entry.name)] = self._signature(entry)

    @staticmethod
    def _signature(entry: Path) -> tuple:
        info = entry.stat()
        return info.st_ino, info.st_mtime_ns, info.st_size

    def poll(self) -> Iterator[tuple]:
        folders, files, appended, statuses = [], [], [], []
        for key, folder in self.layout.folders.items():
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                if name.startswith(runs.TMP_PREFIX) or name == STOP_FILE or entry.is_symlink():
                    continue
                try:
                    if appends_only(name):
                        appended.append((key, entry))
                        continue
                    signature = self._signature(entry)
                except OSError:
                    continue  # replaced or removed meanwhile: the next poll sees it
                if self.seen.get((key, name)) == signature:
                    continue
                self.seen[(key, name)] = signature
                (folders if entry.is_dir() else statuses if name == STATUS_FILE else files).append((key, entry))
        for key, entry in folders:
            yield from self._folder(key, entry)
        for key, entry in files:
            content = entry.read_bytes()
            yield ("file", key, entry.name, self._text(entry.name, content))
        for key, entry in appended:
            message = self._appended(key, entry)
            if message:
                yield message
        for key, entry in statuses:
            yield ("status", key, self._text(entry.name, entry.read_bytes()))

    def _text(self, name: str, content: bytes) -> bytes:
        if not name.endswith(TEXT_SUFFIXES):
            return content
        return self.layout.to_server(content.decode("utf-8", "replace")).encode("utf-8")

    def _appended(self, key: str, entry: Path) -> tuple | None:
        start = self.offsets.get((key, entry.name), 0)
        with entry.open("rb") as handle:
            handle.seek(start)
            data = handle.read()
        if entry.name.endswith(".jsonl"):
            data = data[:data.rfind(b"\n") + 1]  # whole lines only: the rest is being written
        if not data:
            return None
        self.offsets[(key, entry.name)] = start + len(data)
        return ("append", key, entry.name, self._text(entry.name, data))

    def _folder(self, key: str, folder: Path) -> Iterator[tuple]:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            relative = path.relative_to(folder).as_posix()
            with path.open("rb") as handle:
                offset = 0
                while True:
                    data = handle.read(CHUNK_BYTES)
                    if data or offset == 0:
                        yield ("chunk", key, folder.name, relative, offset, data)
                    if len(data) < CHUNK_BYTES:
                        break
                    offset += len(data)
        yield ("folder", key, folder.name)


def write_atomic(path: Path, data: bytes) -> None:
    """Write whole or not at all (a temporary file moved over ``path``)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=runs.TMP_PREFIX)
    except OSError as error:
        raise runs.not_writable(path, error) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise runs.not_writable(path, error) from None


def _plain_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith(runs.TMP_PREFIX):
        raise ValueError(f"refused file name from a Ray node: {name!r}")
    return name


class Receiver:
    """Applies a node's messages to the server's folders (server side). ``on_status(folder, status)`` records a
    status change; ``accepts(folder)`` says whether files may still land there (not in a run cancelled here)."""

    def __init__(self, folders: list[Path], on_status: Callable[[Path, dict], None],
                 accepts: Callable[[Path], bool] = lambda folder: True):
        self.folders = {str(folder): folder for folder in folders}
        self.on_status = on_status
        self.accepts = accepts
        self.partial: dict[tuple[str, str], Path] = {}

    def apply(self, message: tuple) -> None:
        kind, key = message[0], message[1]
        folder = self.folders[key]
        if kind == "status":
            self.on_status(folder, json.loads(message[2]))
            return
        if not self.accepts(folder):
            return
        if kind == "file":
            write_atomic(folder / _plain_name(message[2]), message[3])
        elif kind == "append":
            target = folder / _plain_name(message[2])
            try:
                with target.open("ab") as handle:
                    handle.write(message[3])
            except OSError as error:
                raise runs.not_writable(target, error) from None
        elif kind == "chunk":
            self._chunk(folder, key, *message[2:])
        elif kind == "folder":
            self._finish_folder(folder, key, _plain_name(message[2]))
        else:
            raise ValueError(f"unknown message from a Ray node: {kind!r}")

    def _chunk(self, folder: Path, key: str, name: str, relative: str, offset: int, data: bytes) -> None:
        parts = PurePosixPath(relative).parts
        if PurePosixPath(relative).is_absolute() or not parts or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"refused path from a Ray node: {relative!r}")
        tmp = self.partial.get((key, name))
        try:
            if tmp is None:
                tmp = self.partial[(key, name)] = Path(tempfile.mkdtemp(
                    prefix=f"{runs.TMP_PREFIX}{_plain_name(name)}-", dir=folder))
            target = tmp.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("r+b" if offset else "wb") as handle:
                handle.seek(offset)
                handle.write(data)
        except OSError as error:
            raise runs.not_writable(folder / name, error) from None

    def _finish_folder(self, folder: Path, key: str, name: str) -> None:
        tmp = self.partial.pop((key, name), None)
        if tmp is None:  # an empty folder
            tmp = Path(tempfile.mkdtemp(prefix=f"{runs.TMP_PREFIX}{name}-", dir=folder))
        target = folder / name
        try:
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        except OSError as error:
            shutil.rmtree(tmp, ignore_errors=True)
            raise runs.not_writable(target, error) from None

    def discard(self) -> None:
        """Remove folders whose transfer never finished (the node died mid-way)."""
        for tmp in self.partial.values():
            shutil.rmtree(tmp, ignore_errors=True)
        self.partial.clear()
