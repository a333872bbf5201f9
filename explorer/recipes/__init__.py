"""Recipes: a run (or the Fine-tune tab's settings, before training) as a folder that trains it again on the
user's own GPUs with the standard tools, not with this app.

    recipe/
      train.py            transformers' Trainer + PEFT; the run's model, method options (PEFT's own config,
                          as the app built it), data formatting, learning rate, steps, batch and seed
      data/train.jsonl    the run's training rows; data/heldout.jsonl its held-out rows
      accelerate/         single_gpu.yaml, ddp.yaml, fsdp.yaml, zero3.yaml (accelerate config files)
      launch.sh           accelerate launch with the config chosen by the Calculator's memory per GPU;
                          NPROC=processes, CPU_ONLY=1 for the gloo/CPU path
      requirements.txt    the versions this app trains with
      recipe.json         the app's settings of the run (import-run reads them back)
      README.md           the exact commands, and why this strategy
      output/             after training: a standard PEFT adapter (+ metrics.json)

Only methods PEFT builds can be written as a standard recipe; the others (the project's own modules: Houlsby
adapters, the classification head, full fine-tuning as the app saves it) are refused with the reason.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import pprint
import shutil
import tempfile
import zipfile
from pathlib import Path

from ..errors import ExplorerError
from ..methods import METHODS
from ..train import runs
from ..train.config import TrainConfig
from . import strategy as strategies
from .files import accelerate_configs, launch_script, readme, requirements

TEMPLATE = Path(__file__).with_name("train_template.py")
OPTIMIZERS = {"adamw": "adamw_torch", "adamw8bit": "adamw_bnb_8bit", "sgd": "sgd"}  # the app's -> Trainer's
RECIPE_FILE = "recipe.json"
DROPPED = ("base_model_name_or_path", "revision", "inference_mode", "peft_version")  # this machine's, not the method's


def check_expressible(method, options=None) -> None:
    covered = ", ".join(m.title for m in METHODS.values() if m.uses_peft and not m.recipe_refusal)
    if not method.uses_peft:
        raise ExplorerError(
            f"{method.title}: trained and saved by this project's own code, not built by PEFT, so a recipe with the "
            "standard tools (transformers + PEFT + accelerate, a PEFT adapter in output/) cannot express it. Recipes "
            f"cover: {covered}.")
    if method.recipe_refusal:
        raise ExplorerError(f"{method.title}: {method.recipe_refusal}, so a standard recipe would train something "
                            f"else. Recipes cover: {covered}.")
    refusal = method.recipe_refusal_for(options) if options is not None else ""
    if refusal:
        raise ExplorerError(f"{method.title} with these options: {refusal}. Export its recipe with another start.")


def _jsonable(value):
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):  # PEFT's TaskType, transformers' QuantizationMethod: their plain values
        return value.value
    return value


def peft_config(spec, method_name: str, options) -> dict:
    """The PEFT config the app builds for this method and model (targets resolved), as PEFT's get_peft_config
    reads it: built for real on the meta device, so nothing here re-implements a method."""
    from ..calculator.exact import build_on_meta

    built = build_on_meta(spec, method_name, options).peft_config["default"]
    config = _jsonable(built.to_dict())
    try:  # only what differs from PEFT's defaults, so train.py reads like a hand-written config
        defaults = _jsonable(type(built)().to_dict())
    except Exception:  # noqa: BLE001 - a config class that needs arguments: keep every field
        defaults = {}
    keep = ("peft_type", "task_type")
    return {k: v for k, v in config.items() if k in keep or (k not in DROPPED and defaults.get(k, object()) != v)}


def model_reference(model: str, include_model: bool) -> tuple[str, str, Path | None]:
    """(what train.py loads, a sentence on where it comes from, the folder to copy into the recipe or None)."""
    from ..models import registry

    entry = registry.resolve(model)
    if entry.kind == "hub":
        return entry.location, f"the Hugging Face hub model {entry.location}", None
    folder = Path(entry.location)
    provenance = runs.read_json(folder / "explorer_provenance.json", {}) or {}
    if include_model:
        return "model", f"a copy of the app's model folder {folder.name} in model/ (the exact weights)", folder
    upstream = provenance.get("upstream")
    if upstream:
        return upstream, (f"{upstream} from the Hugging Face hub: the app's {entry.name} is {provenance['source']}, "
                          "so the weights differ slightly; export with --include-model for the exact ones"), None
    return str(folder), f"the model folder {folder} (copy it to the GPU machine, or export with --include-model)", None


def export(config: TrainConfig, options_values: dict, target: Path, gpus: int = 1, gpu_memory_gb: float = 80.0,
           strategy: str | None = None, include_model: bool = False, run: runs.Run | None = None) -> Path:
    """Write the recipe folder for these settings (a run's, or the Fine-tune tab's before training)."""
    from ..data import sources
    from ..models import specs as model_specs
    from ..train.estimate import train_settings

    method = METHODS[config.method]
    options = method.parse_options(options_values)
    check_expressible(method, options)
    spec = model_specs.resolve(config.model)
    choice = strategies.choose(spec, config.method, options, train_settings(config), gpus, gpu_memory_gb, strategy)
    model_name, model_note, model_folder = model_reference(config.model, include_model)
    train_rows, heldout_rows = sources.load_dataset(config.dataset)
    quantization = method.load_kwargs(options, "cuda").get("quantization_config")
    settings = {
        "model": model_name, "peft_config": peft_config(spec, config.method, options),
        "quantization": _jsonable(quantization.to_dict()) if quantization is not None else None,
        "learning_rate": config.learning_rate or method.default_lr, "steps": config.steps,
        "batch_size": config.batch_size, "grad_accum": config.grad_accum, "seq_len": config.seq_len,
        "seed": config.seed, "precision": config.precision, "optim": OPTIMIZERS[config.optimizer],
        "gradient_checkpointing": config.gradient_checkpointing,
    }
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise ExplorerError(f"{target} is not empty: choose a new folder for the recipe.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-recipe-", dir=target.parent))
    try:
        _write(tmp, settings, config, options_values, train_rows, heldout_rows, choice, model_note, method, run)
        if model_folder is not None:
            shutil.copytree(model_folder, tmp / "model", ignore=shutil.ignore_patterns(".tmp-*"))
        if target.exists():
            target.rmdir()
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write(folder: Path, settings: dict, config, options_values, train_rows, heldout_rows, choice, model_note,
           method, run) -> None:
    template = TEMPLATE.read_text(encoding="utf-8")
    marker = "SETTINGS: dict = {}  # filled in by PEFT Explorer's export"
    filled = "SETTINGS: dict = " + pprint.pformat(settings, sort_dicts=False, width=110)
    (folder / "train.py").write_text(template.replace(marker, filled), encoding="utf-8")
    data = folder / "data"
    data.mkdir()
    for name, rows in (("train.jsonl", train_rows), ("heldout.jsonl", heldout_rows)):
        (data / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    configs = folder / "accelerate"
    configs.mkdir()
    for name, text in accelerate_configs(choice.gpus, config.precision, _wrapped_layer(config.model)).items():
        (configs / name).write_text(text)
    (folder / "launch.sh").write_text(launch_script(choice))
    (folder / "launch.sh").chmod(0o755)
    (folder / "requirements.txt").write_text(requirements(bool(settings["quantization"])))
    (folder / "README.md").write_text(readme(config, method, choice, model_note, run, len(train_rows),
                                             len(heldout_rows)))
    (folder / RECIPE_FILE).write_text(json.dumps({
        "config": dataclasses.asdict(config), "options": options_values, "strategy": choice.strategy,
        "gpus": choice.gpus, "run_id": run.run_id if run else None}, indent=2))


def _wrapped_layer(model: str) -> str:
    """The decoder layer class FSDP wraps one by one (transformers' own _no_split_modules of the model)."""
    from ..costs import specs
    from ..models import specs as model_specs

    try:
        names = getattr(specs.meta_model(model_specs.resolve(model)), "_no_split_modules", None) or []
    except Exception:  # noqa: BLE001 - the config still works with a size-based policy
        names = []
    return sorted(names)[0] if names else ""


def export_run(run_id: str, target: Path, **kwargs) -> Path:
    """A finished run's recipe."""
    run = runs.open_run(run_id, need_adapter=False)
    if not run.finished:
        raise ExplorerError(f"Run {run_id} is still {run.state}: export its recipe once it has finished, or export "
                            "the settings from the Fine-tune tab.")
    return export(run.config, run.options, target, run=run, **kwargs)


def read_meta(folder: Path) -> dict:
    """recipe.json: the run's settings, the strategy and the GPU count the recipe was written for."""
    return json.loads((Path(folder) / RECIPE_FILE).read_text(encoding="utf-8"))


def zip_folder(folder: Path) -> Path:
    """The recipe as one zip beside its folder, for download."""
    target = folder.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return target
