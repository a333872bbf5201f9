"""Bringing an adapter trained elsewhere into the runs folder, as a finished run that Compare, export and compose
open like any other (explorer.train.lifecycle.record_import makes the run).

PATH is a recipe folder (its recipe.json says the model, method, options and data exactly; the adapter is in
output/) or any PEFT adapter folder (adapter_config.json + adapter_model.safetensors): then the method is the
registry's method with that PEFT type (a switch such as use_dora picks its sibling) and the options are the
adapter config's values for the method's option names.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import ExplorerError
from ..methods import METHODS
from ..train import lifecycle, runs
from ..train.config import TrainConfig
from . import RECIPE_FILE


def adapter_folder(path: Path) -> Path:
    for folder in (path / "output", path):
        if (folder / "adapter_config.json").is_file():
            if not list(folder.glob("*.safetensors")):
                raise ExplorerError(f"{folder} has adapter_config.json but no .safetensors weights (only "
                                    "safetensors are loaded, never pickles).")
            return folder
    raise ExplorerError(f"{path} holds no PEFT adapter: expected adapter_config.json and adapter_model.safetensors "
                        "(in the folder, or in its output/ for a recipe).")


def method_for(adapter_config: dict) -> str:
    """The registry's method that saves this PEFT type (on an unquantized base; a switch picks a sibling)."""
    found = [m for m in METHODS.values() if m.uses_peft and m.peft_type == adapter_config.get("peft_type")
             and not m.quantized_base]
    if not found:
        raise ExplorerError(f"No method of PEFT Explorer saves PEFT type {adapter_config.get('peft_type')!r}.")
    for method in found:
        for key, siblings in method.switches.items():
            if key in adapter_config and bool(adapter_config[key]) in siblings:
                return siblings[bool(adapter_config[key])]
    return found[0].name


def options_for(method_name: str, adapter_config: dict) -> dict:
    """The adapter config's values for the method's option names (lists as the comma-separated text the
    options take; a target list makes the target choice custom)."""
    fields = {f.name: f for f in dataclasses.fields(METHODS[method_name].options_type)}
    options = {}
    for name, value in adapter_config.items():
        if name in fields and value is not None:
            options[name] = ",".join(sorted(value)) if isinstance(value, (list, tuple, set)) else value
    if "target_modules" in options and "target_preset" in fields:
        options["target_preset"] = "custom"
    return options


def _model_name(given: str | None, adapter_config: dict) -> str:
    from ..models import registry

    if given:
        return given
    base = str(adapter_config.get("base_model_name_or_path") or "")
    for entry in registry.registry().values():  # a folder of this app's registry: its name
        if base and entry.kind != "hub" and Path(entry.location).resolve() == Path(base).resolve():
            return entry.name
    if not base:
        raise ExplorerError("The adapter does not name its base model: give it with --model NAME.")
    return base


def import_run(path: Path, model: str | None = None, dataset: str | None = None) -> Path:
    """The new run's folder (state done), with the adapter, settings and a summary from metrics.json."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ExplorerError(f"{path} is not a folder: give a recipe folder or a PEFT adapter folder.")
    adapter = adapter_folder(path)
    adapter_config = runs.read_json(adapter / "adapter_config.json", None)
    if not isinstance(adapter_config, dict):
        raise ExplorerError(f"{adapter / 'adapter_config.json'} is not valid JSON.")
    recipe = runs.read_json(path / RECIPE_FILE, None)
    if isinstance(recipe, dict) and isinstance(recipe.get("config"), dict):
        values, options = dict(recipe["config"]), dict(recipe.get("options") or {})
        if model:
            values["model"] = model
    else:
        method = method_for(adapter_config)
        values = {"model": _model_name(model, adapter_config), "method": method}
        options = options_for(method, adapter_config)
    if dataset:
        values["dataset"] = dataset
    metrics = runs.read_json(adapter / "metrics.json", {}) or {}
    if metrics.get("steps"):
        values["steps"] = metrics["steps"]
    from ..models import registry

    config = TrainConfig.parse(values, caps=False)  # trained elsewhere: this server's caps are for training here
    registry.resolve(config.model)  # the model must be one this server may load
    METHODS[config.method].parse_options(options)
    if METHODS[config.method].peft_type != adapter_config.get("peft_type"):
        raise ExplorerError(f"The adapter is PEFT type {adapter_config.get('peft_type')}, but its recipe says "
                            f"{METHODS[config.method].title}.")
    losses = metrics.get("train_losses") or []
    summary = {"method": config.method, "model": config.model, "dataset": config.dataset,
               "steps": metrics.get("steps", config.steps), "train_loss_first": losses[0] if losses else None,
               "train_loss_last": losses[-1] if losses else None,
               "eval_loss_first": metrics.get("heldout_loss_before"), "eval_loss_last": metrics.get("heldout_loss_after"),
               "task_score_base": None, "task_score_adapted": None, "stopped": False, "imported_from": str(path),
               "trained_with": {k: metrics[k] for k in ("num_processes", "distributed_backend", "device")
                                if k in metrics}}
    return lifecycle.record_import(config, options, adapter, summary)
