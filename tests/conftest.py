"""Shared fixtures: offline environment, provisioned models, a launched app, headless chromium."""

import os

# Before gradio or transformers are imported anywhere: no analytics, no hub, no progress bars.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
# Torch's OpenMP threads sleep when they wait instead of spinning. Two pytest-xdist workers, each with a
# thread per core (and their child processes), share the cores: a waiting thread that spins takes a core
# from the other process's work. Measured on this 2-core machine, tests/test_compare.py and test_gguf.py at
# -n 2: 243 s of wall time spinning (OpenMP's default), 164 s passive, 146 s with one thread per worker;
# passive keeps a second thread for a test whose partner worker is idle (its app, its subprocesses).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import tempfile  # noqa: E402

# Each test process keeps its training runs apart (parallel workers, and the user's own runs).
os.environ["EXPLORER_RUNS_DIR"] = tempfile.mkdtemp(prefix="explorer-test-runs-")
os.environ["EXPLORER_RACES_DIR"] = tempfile.mkdtemp(prefix="explorer-test-races-")

import shutil  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from explorer import settings  # noqa: E402
from explorer.models import provision  # noqa: E402
from explorer.train import lifecycle, runs  # noqa: E402
from explorer.train.config import TrainConfig  # noqa: E402

CHROMIUM = Path("/usr/lib/chromium/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"
TINY = provision.TINY_NAME
BUNDLED = provision.BUNDLED_NAME


def train_run(method: str, dataset: str = "pirate", options: dict | None = None, model: str = TINY,
              **overrides) -> str:
    """A short run trained in this process through the run lifecycle (as the CLI trains); its run id.
    Defaults suit the tiny model: 3 steps, no task score, held-out loss at the start and the end."""
    values = dict(model=model, method=method, dataset=dataset, steps=3, batch_size=4, seq_len=64,
                  eval_examples=0, eval_every=100)
    values.update(overrides)
    outcome = lifecycle.execute(lifecycle.create(TrainConfig(**values), options or {}))
    assert outcome.state == "done", outcome.error
    return outcome.summary["run_id"]


def copy_run(run_id, edit_config=None, options=None) -> str:
    """A copy of a run under a new valid id, its settings edited: cheap fakes for the error checks."""
    import json

    method = json.loads((runs.run_path(run_id) / "settings.json").read_text())["config"]["method"]
    target = runs.runs_dir() / runs.new_run_id(method)
    shutil.copytree(runs.run_path(run_id), target)
    settings_file = target / "settings.json"
    saved = json.loads(settings_file.read_text())
    saved["config"].update(edit_config or {})
    if options is not None:
        saved["options"] = options
    settings_file.write_text(json.dumps(saved))
    return target.name


def shallow(name: str, layers: int):
    """A catalog model with fewer layers (layer_types cut to match): the same kinds of block, so a per-block
    check (FLOPs against torch's counter) covers the model at a fraction of the cost."""
    import json

    from explorer.costs import specs

    data = json.loads((specs.CATALOG_DIR / f"{name}.json").read_text())
    data.pop("_catalog")
    depth_key = "n_layer" if "n_layer" in data else "num_hidden_layers"
    assert data[depth_key] >= layers
    data[depth_key] = layers
    for key in ("layer_types", "no_rope_layers"):
        if key in data:
            data[key] = data[key][:layers]
    return specs.spec_from_dict(data, f"{name}-{layers}-layers", "upload")


def force_status(run_dir: Path, state: str, **extra) -> None:
    """Put a run in a state directly, as an earlier server or another process may have left it (tests only:
    the app changes a run's status through explorer.train.lifecycle alone)."""
    runs.write_json(run_dir / "status.json", {"state": state, "time": 0, **extra})


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


@pytest.fixture(autouse=True)
def exact_builds_back_in_this_process():
    """A test that launches app.py turns on the Calculator's build process; later tests build here again
    (a monkeypatched build must be the one that runs), and the child is stopped by its pid."""
    yield
    from explorer.calculator import exact

    if exact._use_child:
        exact.build_in_child_process(False)
