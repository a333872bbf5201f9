"""The one exception type whose message is meant for the user (UI and CLI)."""


class ExplorerError(Exception):
    """A problem the user can act on; its message is shown as-is, never a traceback."""
