"""What runs on a Ray node: the job's own command, in a temporary copy of its folders, with every change sent
back to the server as the task's stream of results (explorer.train.backends.sync).

``run_job`` is a Ray generator task (explorer.train.backends.ray_backend submits it). It yields:

    ("started", {"node", "hostname", "device", "worker_pid"})   where the job landed
    sync's messages ...                                         while the command runs, and once after
    ("exit", code)                                              the command's exit code

The command is the one a local worker runs (``python -m explorer.train.worker RUN_DIR``, a race's worker),
so training goes through explorer.train.lifecycle.execute exactly as on the server's machine. Stop requests
and cancellations reach it through a small Ray actor the server posts to (``Signals``): the node turns
them into the STOP file or the cancelled status the worker already watches, so a stop lands within a step.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ... import settings
from . import sync

POLL_SECONDS = 0.25      # how often the node looks for changes to send (a training step is rarely shorter)
JOB_PREFIX = "explorer-ray-job-"   # the job's temporary folder on the node
OWNER_FILE = ".owner-pid"
SIGNAL_SECONDS = 0.1     # how often the server looks for new STOP files to forward
SIGNAL_WAIT_SECONDS = 2  # how long the node's request for stop requests waits for one (a long poll)


class Signals:
    """Stop requests and cancellations, posted by the server and taken by the node running the job (a Ray
    actor: the node cannot see the server's STOP files). ``take`` waits up to ``wait`` seconds for a post, so
    a stop reaches the node as soon as it is made, not at its next poll (an async actor: one event loop)."""

    def __init__(self):
        self.waiting: dict[str, list[tuple[str, str]]] = {}
        self.posted: dict[str, object] = {}

    def _event(self, job_key: str):
        import asyncio

        return self.posted.setdefault(job_key, asyncio.Event())

    async def post(self, job_key: str, kind: str, folder: str) -> None:
        self.waiting.setdefault(job_key, []).append((kind, folder))
        self._event(job_key).set()

    async def take(self, job_key: str, wait: float = 0.0) -> list[tuple[str, str]]:
        import asyncio

        if not self.waiting.get(job_key) and wait > 0:
            event = self._event(job_key)
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), wait)
            except asyncio.TimeoutError:
                pass
        return self.waiting.pop(job_key, [])

    async def forget(self, job_key: str) -> None:
        self.waiting.pop(job_key, None)
        self.posted.pop(job_key, None)


def _die_with_parent() -> None:
    """In the child before exec: Linux kills it when the Ray worker that started it dies, so a killed worker
    never leaves a training process behind (PR_SET_PDEATHSIG = 1)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _gpu_names(ids) -> list[str]:
    """Names of the GPUs Ray gave this task, from nvidia-smi (no CUDA context in this process)."""
    names = []
    for gpu in ids:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", f"--id={gpu}"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        names.append(out or f"GPU {gpu}")
    return names


def where() -> dict:
    import ray

    context = ray.get_runtime_context()
    gpus = _gpu_names(ray.get_gpu_ids())
    cpus = context.get_assigned_resources().get("CPU", 0)
    device = ", ".join(gpus) if gpus else f"CPU ×{cpus:g}"
    return {"node": ray.util.get_node_ip_address(), "hostname": socket.gethostname(), "device": device,
            "worker_pid": os.getpid()}


def _follow_signals(signals, job_key: str, layout: sync.Layout, done: threading.Event) -> None:
    import ray

    from .. import lifecycle

    while not done.is_set():
        try:
            taken = ray.get(signals.take.remote(job_key, SIGNAL_WAIT_SECONDS), timeout=SIGNAL_WAIT_SECONDS + 30)
        except Exception:  # noqa: BLE001 - the server is busy or gone: Ray ends this task if it is gone
            done.wait(SIGNAL_SECONDS)
            continue
        for kind, key in taken:
            folder = layout.folders.get(key)
            if folder is None:
                continue
            if kind == "stop":
                (folder / sync.STOP_FILE).touch()
            elif kind == "cancel":
                lifecycle.cancel(folder)


def _remove_stale_folders() -> None:
    """Job folders left by Ray workers that were killed (their ``finally`` never ran): the owner pid is dead."""
    for folder in Path(tempfile.gettempdir()).glob(f"{JOB_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):
            continue  # another user's, or being created right now


def run_job(bundle: sync.Bundle, command: list[str], server_python: str, log_dir: str, signals, job_key: str):
    """The Ray task: unpack, run the command, stream the changes, report the exit code."""
    _remove_stale_folders()
    root = Path(tempfile.mkdtemp(prefix=JOB_PREFIX))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    done = threading.Event()
    process = None
    try:
        layout = sync.unpack(bundle, root)
        yield ("started", where())
        watcher = sync.Watcher(layout)
        threading.Thread(target=_follow_signals, args=(signals, job_key, layout, done), daemon=True).start()
        argv = [sys.executable if arg == server_python else layout.argument(arg) for arg in command]
        with (layout.folders[log_dir] / "worker.err").open("ab") as err:
            process = subprocess.Popen(argv, cwd=settings.REPO_ROOT, env={**os.environ, **layout.env()},
                                       stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_die_with_parent)
        while process.poll() is None:
            yield from watcher.poll()
            time.sleep(POLL_SECONDS)
        yield from watcher.poll()
        yield ("exit", process.returncode)
    finally:
        done.set()
        if process is not None and process.poll() is None:  # the task was cancelled: so is its command
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
