"""The composition experiment's demo runs: short runs of each composable method on two bundled tasks.

A learner picks which methods the demo trains (every method that says how its runs combine, by default:
LoRA, prompt tuning and prefix tuning, two runs each); a finished run with default options is reused.
"""

from __future__ import annotations

import threading

from ..errors import ExplorerError
from ..methods import METHODS
from ..models.provision import BUNDLED_NAME as BUNDLED
from ..options import whole
from ..train import lifecycle, runs
from ..train.config import TrainConfig

COMPOSABLE = {name: m for name, m in METHODS.items() if m.combinations}  # methods that say how their runs combine
DEMO_TASKS = ("pirate", "french")
DEMO_RUNS = {f"{name}-{task}": (name, task) for name in COMPOSABLE for task in DEMO_TASKS}
_DEMO_LOCK = threading.Lock()


def demo_runs(methods=None) -> dict[str, tuple[str, str]]:
    """{"lora-pirate": ("lora", "pirate"), ...} for the chosen methods (all composable ones by default)."""
    if methods is None:
        return dict(DEMO_RUNS)
    chosen = [m.strip() for m in methods if m and m.strip()]
    if not chosen:
        raise ExplorerError("Choose at least one method for the demo runs: " + ", ".join(COMPOSABLE) + ".")
    unknown = [m for m in chosen if m not in COMPOSABLE]
    if unknown:
        raise ExplorerError(f"The demo trains runs of methods that combine ({', '.join(COMPOSABLE)}), not "
                            f"{', '.join(unknown)}.")
    return {name: spec for name, spec in DEMO_RUNS.items() if spec[0] in chosen}


def find_demo_run(model: str, method: str, dataset: str) -> str | None:
    """The newest finished run of this method, model and bundled dataset with default options, if any."""
    defaults = METHODS[method].parse_options({})
    for run in runs.list_runs():
        config = run.config
        if run.state != "done" or run.summary.get("stopped") or config is None or \
                (config.model, config.method, config.dataset) != (model, method, dataset):
            continue
        try:
            if run.method.parse_options(run.options) != defaults:
                continue  # e.g. another rank: 'linear' needs the two LoRA runs' ranks equal
        except (ExplorerError, TypeError, AttributeError):
            continue
        if (run.folder / runs.ADAPTER_DIR / "adapter_model.safetensors").is_file():
            return run.run_id
    return None


def ensure_demo_runs(model: str = BUNDLED, steps: int = 25, on_event=lambda e: None, methods=None) -> dict[str, str]:
    """The short runs the experiment needs (each chosen method on the pirate and french tasks), each
    reused when a finished one exists, trained here otherwise: {"lora-pirate": run_id, ...}.

    Trains in this process (like the train CLI): call it from the CLI or a worker, not the web server."""
    steps = whole("steps", steps, 1, 1000)
    wanted = demo_runs(methods)
    found = {}
    with _DEMO_LOCK:
        for name, (method, dataset) in wanted.items():
            run_id = find_demo_run(model, method, dataset)
            if run_id:
                found[name] = run_id
                on_event({"event": "demo_run", "name": name, "state": "reused", "run_id": run_id})
                continue
            config = TrainConfig.parse({"model": model, "method": method, "dataset": dataset, "steps": steps})
            run_dir = lifecycle.create(config, {})
            on_event({"event": "demo_run", "name": name, "state": "training", "run_id": run_dir.name})
            outcome = lifecycle.execute(run_dir, [lambda event, name=name: on_event({**event, "demo_run": name})])
            on_event({"event": "demo_run", "name": name, "state": outcome.state, "run_id": run_dir.name,
                      **({"error": outcome.error} if outcome.error else {})})
            if outcome.state == "failed":
                raise ExplorerError(f"The demo run {name} failed: {outcome.error}")
            found[name] = run_dir.name
    return found
