"""Shared by the hostile-input tests (issue 6): every case must end in a valid result or an ExplorerError
whose message says what is wrong (never a traceback or another exception type), and nothing may be
written outside a temporary folder: an audit hook watches every file the process opens for writing,
creates, renames or deletes."""

from __future__ import annotations

import os
import sys
import tempfile

import pytest

# --------------------------------------------------------------------------- no writes outside temp folders

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.mkdir": (0,), "os.rename": (0, 1), "os.replace": (0, 1), "os.remove": (0,), "os.rmdir": (0,),
                "os.symlink": (1,), "os.link": (1,), "os.truncate": (0,), "shutil.rmtree": (0,), "os.chmod": (0,)}
_state: dict = {"writes": None, "touched": None, "watch": None, "busy": False}


def _text(path) -> str | None:
    if isinstance(path, (bytes, bytearray)):
        return os.fsdecode(bytes(path))
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path)
    return None  # a file descriptor


def _audit(event: str, args: tuple) -> None:
    if _state["writes"] is None or _state["busy"]:
        return
    _state["busy"] = True
    try:
        paths = []
        if event == "open":
            path, _mode, flags = args
            if isinstance(flags, int) and flags & _WRITE_FLAGS:
                paths.append(_text(path))
            watch = _state["watch"]
            if watch and (text := _text(path)) and os.path.abspath(text).startswith(watch):
                _state["touched"].append((event, text))
        elif event in ("os.listdir", "os.scandir") and _state["watch"] and args and (text := _text(args[0])):
            if os.path.abspath(text).startswith(_state["watch"]):
                _state["touched"].append((event, text))
        elif event in _PATH_EVENTS:
            paths.extend(_text(args[i]) for i in _PATH_EVENTS[event] if i < len(args))
        for path in paths:
            if path is None or path.endswith((".pyc", ".pyc.tmp")) or "__pycache__" in path:
                continue
            full = os.path.abspath(path)
            if not any(full.startswith(root) for root in _state["roots"]):
                _state["writes"].append((event, full))
    finally:
        _state["busy"] = False


sys.addaudithook(_audit)


def _hypothesis_home() -> str:
    """Hypothesis caches its own files here (the test tool's, not the app's writes)."""
    from hypothesis.configuration import storage_directory

    return os.path.abspath(storage_directory(intent_to_write=False).home_directory)


@pytest.fixture(autouse=True)
def no_writes_outside_temp(tmp_path):
    """Fail the test if anything outside the temp folders (and /dev/null) was written."""
    roots = {str(tmp_path), tempfile.gettempdir(), os.path.realpath(tempfile.gettempdir()), os.devnull,
             os.environ["EXPLORER_RUNS_DIR"], _hypothesis_home()}
    _state.update(writes=[], touched=[], watch=None, roots=tuple(roots))
    yield
    writes, _state["writes"] = _state["writes"], None
    assert writes == [], f"wrote outside the temp folders: {writes[:5]}"


@pytest.fixture
def file_audit() -> dict:
    """The audit hook's state: set ["watch"] to a folder and read ["touched"] for what was read inside it."""
    return _state
