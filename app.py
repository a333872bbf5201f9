"""Start PEFT Explorer: `python app.py` (or `make run`, which also sets everything up).

Hosting for a class (README, "Hosting for a class"): EXPLORER_HOST=0.0.0.0 serves other machines,
EXPLORER_AUTH / EXPLORER_AUTH_FILE ask for a login, EXPLORER_CONCURRENCY lets users' requests run
side by side, and the EXPLORER_MAX_* settings cap what one user may ask for.
"""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from explorer import settings  # noqa: E402

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def launch(**overrides):
    """Build, queue and launch the app with the hosting settings; ``overrides`` go to Gradio's launch
    (tests pass a port and prevent_thread_lock). Returns what Gradio's launch returns."""
    settings.check_all()  # a bad setting stops here with its message, not in the middle of a request
    # Imported here, not at the top: the Calculator's build process (spawned) imports this file as its main
    # module, and needs none of the UI.
    from explorer.calculator import exact
    from explorer.ui.app import CSS, build_app

    exact.build_in_child_process()  # exact counts built outside the server's GIL, at the lowest priority
    auth = settings.auth()
    host = overrides.pop("server_name", settings.host())
    if auth is None and host not in LOOPBACK:
        print(f"warning: serving on {host} without a login; set EXPLORER_AUTH or EXPLORER_AUTH_FILE to ask for one",
              file=sys.stderr)
    concurrency = settings.concurrency()
    demo = build_app().queue(default_concurrency_limit=concurrency)
    options = dict(server_name=host, server_port=settings.port(), css=CSS, auth=auth,
                   max_threads=max(40, 2 * concurrency + 8))
    options.update(overrides)
    return demo, demo.launch(**options)


if __name__ == "__main__":
    launch()
