"""What every tab shares: errors turned into messages (one decorator for all handlers), plain-text API
errors, and the one job manager that runs fine-tunes in worker processes."""

from __future__ import annotations

import functools
import html
import inspect
import logging
import threading
from collections import OrderedDict

import gradio as gr

from ..errors import ExplorerError
from ..train.jobs import JobManager

log = logging.getLogger("explorer.ui")
_jobs: JobManager | None = None


def jobs() -> JobManager:
    """The server's job manager (created on first use; it marks runs a previous server left unfinished)."""
    global _jobs
    if _jobs is None:
        _jobs = JobManager()
    return _jobs


def plain_error(error: BaseException) -> str:
    """The message for an API caller: plain text. Unexpected errors are logged with their traceback on the
    server, and the caller learns what happened without it."""
    if isinstance(error, ExplorerError):
        return str(error)
    log.exception("unexpected error in a UI handler")
    return (f"something went wrong ({type(error).__name__}: {str(error)[:300]}). The server keeps running; "
            "the details are in its log.")


def error_message(error: BaseException) -> str:
    """The same message as one paragraph of markdown for the page (user text escaped)."""
    return f"**Error:** {html.escape(plain_error(error))}"


def shows_errors(outputs: int = 1, at: int = 0, blank: dict | None = None):
    """Decorator for a handler with ``outputs`` outputs: an exception becomes the error message at position
    ``at``, the outputs listed in ``blank`` (position -> value) are cleared, and the others stay as they
    were on the page (gr.skip). Works for plain handlers and for generators (streaming handlers)."""
    def result(error: BaseException):
        values = [gr.skip()] * outputs
        for position, value in (blank or {}).items():
            values[position] = value
        values[at] = error_message(error)
        return values[0] if outputs == 1 else tuple(values)

    def decorate(handler):
        if inspect.isgeneratorfunction(handler):
            @functools.wraps(handler)
            def streaming(*args, **kwargs):
                try:
                    yield from handler(*args, **kwargs)
                except Exception as error:  # noqa: BLE001 - every failure becomes a message on the page
                    yield result(error)
            return streaming

        @functools.wraps(handler)
        def plain(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - every failure becomes a message on the page
                return result(error)
        return plain

    return decorate


def api_errors(handler):
    """Decorator for a JSON API handler: an exception becomes {"error": plain text}."""
    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - an API caller gets a message, never a traceback
            return {"error": plain_error(error)}
    return wrapped


class Latest:
    """The newest value each browser session asked for (bounded: the oldest sessions are forgotten).

    A slow follow-up event checks it before showing its result, so an answer for an older request never
    overwrites a newer one (the Calculator's exact count while the slider moves on; the live view of a run
    after another run was picked)."""

    def __init__(self, limit: int = 2000):
        self._values: OrderedDict = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def set(self, request: gr.Request | None, value) -> None:
        key = getattr(request, "session_hash", None)
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self._limit:
                self._values.popitem(last=False)

    def get(self, request: gr.Request | None):
        with self._lock:
            return self._values.get(getattr(request, "session_hash", None))

    def is_current(self, request: gr.Request | None, value) -> bool:
        return self.get(request) == value
