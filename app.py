"""Start PEFT Explorer: `python app.py` (or `make run`, which also sets everything up)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from explorer import settings  # noqa: E402
from explorer.ui.app import CSS, build_app  # noqa: E402

if __name__ == "__main__":
    build_app().queue().launch(server_name=settings.host(), server_port=settings.port(), css=CSS)
