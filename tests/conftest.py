"""Shared fixtures: offline environment, provisioned models, a launched app, headless chromium."""

import os

# Before gradio or transformers are imported anywhere: no analytics, no hub, no progress bars.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

import tempfile  # noqa: E402

# Each test process keeps its training runs apart (parallel workers, and the user's own runs).
os.environ["EXPLORER_RUNS_DIR"] = tempfile.mkdtemp(prefix="explorer-test-runs-")

import shutil  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from explorer.models import provision  # noqa: E402
from explorer import settings

CHROMIUM = Path("/usr/lib/chromium/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture(scope="session")
def cache() -> Path:
    """The real models_cache with both shipped models provisioned (make test does it first)."""
    folder = settings.models_cache()
    provision.ensure_all(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(cache):
    from explorer.ui.app import CSS, build_app

    demo = build_app().queue(default_concurrency_limit=settings.concurrency())  # as app.py launches it
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True, share=False, css=CSS)
    yield url.replace("localhost", "127.0.0.1")
    demo.close()


@pytest.fixture(scope="session")
def browser_type_launch_args():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing; `make test` installs it with apt-get")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return {
        "executable_path": str(CHROMIUM),
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
    }


@pytest.fixture
def screenshot(page):
    """Save a full-page screenshot under tests/screenshots/ (git-ignored) and return its path."""
    SCREENSHOTS.mkdir(exist_ok=True)

    def take(name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def wait_for_text(page, selector: str, text: str, timeout: int = 60_000) -> None:
    """Wait until the element exists and its visible text (or a textarea's value) contains ``text``."""
    page.wait_for_function(
        """([selector, text]) => { const e = document.querySelector(selector);
             return !!e && ((e.value !== undefined && e.value.includes(text)) || e.innerText.includes(text)); }""",
        arg=[selector, text], timeout=timeout)
