"""Small helpers shared by the tabs: turning errors into messages the page shows."""

from __future__ import annotations

import html
import logging

from ..errors import ExplorerError

log = logging.getLogger("explorer.ui")


def error_message(error: BaseException) -> str:
    """A one-paragraph message for the page. Unexpected errors are logged with their traceback
    on the server, and the page says what happened without showing it."""
    if isinstance(error, ExplorerError):
        return f"**Error:** {html.escape(str(error))}"
    log.exception("unexpected error in a UI handler")
    return f"**Error:** something went wrong ({type(error).__name__}: {html.escape(str(error))[:300]}). The server keeps running; the details are in its log."
