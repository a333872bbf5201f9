"""Where jobs run: the backend behind the job queue (explorer.train.jobs.JobManager).

A job is a command that trains one or more queued runs (``python -m explorer.train.worker RUN_DIR``, or a
race's ``python -m explorer.race.worker RACE_DIR``). The contract between the queue and a backend is the
run folder's files: whatever runs the command, the server's run folders end up with the same status.json,
log.jsonl (streamed while the job runs), summary.json and adapter/ as a local worker writes.

- ``local`` (explorer.train.backends.local, the default): a worker process on this machine.
- ``ray`` (explorer.train.backends.ray_backend): a task on a Ray cluster that runs the same command on a
  node, in a temporary copy of the job's folders, and sends every change back through Ray (no shared disk).

EXPLORER_JOB_BACKEND chooses (explorer.settings.job_backend).
"""

from __future__ import annotations

from ... import settings


from .base import Backend, Ended, Handle, Job  # noqa: F401 (the package's interface)

_backends: dict[tuple, Backend] = {}


def current() -> Backend:
    """The backend EXPLORER_JOB_BACKEND names (one per process and Ray address)."""
    name = settings.job_backend()
    key = (name, settings.ray_address() if name == "ray" else None)
    if key not in _backends:
        if name == "ray":
            from .ray_backend import RayBackend

            _backends[key] = RayBackend(key[1])
        else:
            from .local import LocalBackend

            _backends[key] = LocalBackend()
    return _backends[key]
