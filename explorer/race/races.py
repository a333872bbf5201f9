"""Race folders: models_cache/races/<race-id>/race.json (settings and entrants with their run ids) and
base.json (the base model's held-out loss, task score and probe score, computed once per race).

Fairness: every entrant trains on the same data in the same order (same seed), for the same number of
optimizer steps, each at its own method's default learning rate (prompt, prefix and IA³ need far higher
rates than LoRA), or at each rate of a small per-entrant sweep. Entrants are ordinary runs (Compare,
download and compose work on them); an entrant whose settings equal a finished run's is that run, not
trained again.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from ..options import coerce, option
from ..train import lifecycle, runs
from ..train.config import TrainConfig
from .entrants import Entrant, parse_specs, with_rates

RACE_ID = re.compile(r"^\d{8}-\d{6}-race-[0-9a-f]{6}$")
RATE_FACTORS = (0.3, 1.0, 3.0)  # the optional sweep: each entrant's default rate ×0.3, ×1 and ×3

STOP_FILE = runs.STOP_FILE  # a race asked to stop: explorer.race.runner writes it


@dataclass
class RaceSettings:
    """What every entrant shares. Defaults: a race of the default field on the bundled model fits in about 15
    minutes on 2 CPU cores (bench/race.py measures it)."""

    model: str = option("smollm2-135m-instruct", "The base model every entrant fine-tunes.")
    dataset: str = option("pirate", "A bundled task or an uploaded file (the same rows, in the same order, for all).")
    score: str = option("", "How held-out replies of uploaded data are scored (exact, contains, token_f1, "
                        "regex:PATTERN); bundled tasks use their own score.")
    steps: int = option(20, "Optimizer steps per entrant: the same budget, hence the same examples, for each.",
                        min=1, max=100_000)
    batch_size: int = option(4, "Examples per step.", min=1, max=1024)
    seq_len: int = option(96, "Tokens per example.", min=8, max=32_768)
    seed: int = option(0, "One seed for data order and initialisation, for every entrant.", min=0, max=2**31 - 1)
    # Every 5 steps on 4 examples (one batch): five points per curve in the default race (step 0 is the base's
    # loss, measured once per race), so a class sees each entrant's curve bend. The cost, from one held-out loss
    # (bench/race.py's breakdown: 1.7-1.9 s on 8 examples, two batches of 4, so ~0.9 s a batch): four losses of
    # one batch instead of one of two, about +2 s per entrant, +0.5 min over the default race's 14 entrants
    # (14.0-14.4 min measured before: about 14.5-14.9). Eight examples every 5 steps would add ~1.3 min.
    eval_every: int = option(5, "Held-out loss every this many steps (the live chart's points).", min=1,
                             max=100_000)
    eval_loss_examples: int = option(4, "Held-out examples the held-out loss is measured on.", min=1, max=1000)
    eval_examples: int = option(8, "Held-out examples for the task score.", min=0, max=1000)
    probe_examples: int = option(10, "General questions asked after training, to see what was forgotten.",
                                 min=0, max=80)
    max_new_tokens: int = option(16, "Tokens generated per scored reply.", min=1, max=512)
    rate_sweep: bool = option(False, "Train each entrant at its default learning rate ×0.3, ×1 and ×3 and keep "
                              "the best held-out loss (three times the time).")

    @classmethod
    def parse(cls, values: dict) -> "RaceSettings":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ExplorerError(f"Unknown race setting {', '.join(unknown)}.")
        return cls(**{k: coerce(fields[k], v) for k, v in values.items()})

    def train_config(self, entrant: Entrant) -> TrainConfig:
        """The entrant's run settings; the base model is scored once by the race, not by each entrant."""
        return TrainConfig.parse({
            "model": self.model, "method": entrant.method, "dataset": self.dataset, "score": self.score,
            "steps": self.steps, "learning_rate": entrant.learning_rate, "batch_size": self.batch_size,
            "seq_len": self.seq_len, "seed": self.seed, "eval_every": self.eval_every,
            "eval_loss_examples": self.eval_loss_examples, "eval_examples": self.eval_examples,
            "probe_examples": self.probe_examples,
            "max_new_tokens": self.max_new_tokens, "score_base": False,
            "watch_every": 0})  # the watch (Fine-tune's timeline) would add its generations to every entrant


@dataclass
class Race:
    folder: Path
    settings: RaceSettings
    entrants: list[dict]                 # {"name", "method", "options", "learning_rate", "group", "run_id", "reused"}
    created: float
    base: dict = field(default_factory=dict)

    @property
    def race_id(self) -> str:
        return self.folder.name

    def run_folders(self) -> list[Path]:
        return [runs.runs_dir() / e["run_id"] for e in self.entrants]

    def states(self) -> list[str]:
        return [runs.status(folder).get("state", "unknown") for folder in self.run_folders()]

    @property
    def finished(self) -> bool:
        """Every entrant finished and the base model scored (or the race stopped before it was)."""
        stopped = (self.folder / STOP_FILE).exists()
        return all(state in runs.FINISHED for state in self.states()) and (bool(self.base) or stopped)

    def to_json(self) -> dict:
        return {"race_id": self.race_id, "created": self.created, "settings": dataclasses.asdict(self.settings),
                "entrants": self.entrants}


def races_dir() -> Path:
    folder = settings.races_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise runs.not_writable(folder, error) from None
    return folder


def race_path(race_id: str) -> Path:
    race_id = (race_id or "").strip()
    if not RACE_ID.match(race_id):
        raise ExplorerError(f"'{race_id}' is not a race id made by PEFT Explorer.")
    folder = races_dir() / race_id
    if not (folder / "race.json").is_file() or folder.is_symlink():
        raise ExplorerError(f"There is no race '{race_id}'.")
    return folder


def read_race(race_id: str) -> Race:
    folder = race_path(race_id)
    data = runs.read_json(folder / "race.json", {})
    try:
        race_settings = RaceSettings.parse(data["settings"])
        entrants = list(data["entrants"])
    except (KeyError, TypeError, ExplorerError) as error:
        raise ExplorerError(f"Race {race_id}'s race.json is not valid: {error}") from None
    return Race(folder, race_settings, entrants, data.get("created", 0.0), runs.read_json(folder / "base.json", {}))


def list_races() -> list[Race]:
    """Every readable race, newest first."""
    found = []
    for folder in sorted(races_dir().iterdir(), reverse=True):
        if RACE_ID.match(folder.name) and not folder.is_symlink():
            try:
                found.append(read_race(folder.name))
            except ExplorerError:
                continue
    return found


def same_settings(run: runs.Run, config: TrainConfig, options: dict) -> bool:
    if run.config is None or run.method is None:
        return False
    try:
        return (run.config == config and
                run.method.parse_options(run.options) == run.method.parse_options(options))
    except (ExplorerError, TypeError):
        return False


def finished_run_like(config: TrainConfig, options: dict, done: list[runs.Run]) -> str | None:
    """A finished (done, not stopped) run with exactly these settings, whose adapter is saved: reused."""
    for run in done:
        if run.has_adapter and not run.summary.get("stopped") and same_settings(run, config, options):
            return run.run_id
    return None


def create_race(race_settings: RaceSettings, entrants: list[Entrant] | str) -> Race:
    """A new race: its folder, and for each entrant (at each swept rate) a queued run, or the finished run
    with identical settings. Every entrant is checked before any run is created."""
    if isinstance(entrants, str):
        entrants = parse_specs(entrants)
    groups = with_rates(entrants, RATE_FACTORS) if race_settings.rate_sweep else [[e] for e in entrants]
    planned = [(entrant, race_settings.train_config(entrant), i) for i, group in enumerate(groups)
               for entrant in group]
    check_entrants(race_settings, [e for e, _, _ in planned])
    done = [run for run in runs.list_runs() if run.state == "done"]
    folder = races_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-race-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    rows = []
    for entrant, config, group in planned:
        reused = finished_run_like(config, entrant.options_dict, done)
        run_id = reused or lifecycle.create(config, entrant.options_dict).name
        rows.append({"name": entrant.name, "method": entrant.method, "options": entrant.options_dict,
                     "learning_rate": config.learning_rate, "group": group, "run_id": run_id,
                     "reused": bool(reused)})
    race = Race(folder, race_settings, rows, time.time())
    runs.write_json(folder / "race.json", race.to_json())
    return race


def check_entrants(race_settings: RaceSettings, entrants: list[Entrant]) -> None:
    """Everything that can be known before training: the model policy, the dataset, and each entrant's
    options on this model (e.g. target modules it does not have), one clear line for the first problem."""
    from ..data import sources
    from ..methods import METHODS
    from ..models import registry
    from ..models import specs as model_specs

    registry.resolve(race_settings.model)
    if sources.dataset_kind(race_settings.dataset) == "chat":  # else each entrant says which data it needs
        sources.load_dataset(race_settings.dataset)
    spec = model_specs.resolve(race_settings.model)
    for entrant in entrants:
        method = METHODS[entrant.method]
        try:
            options = method.parse_options(entrant.options_dict)
            method.validate(spec, options)
            sources.require_kind(race_settings.dataset, method.data_kind(options), method.title)
        except ExplorerError as error:
            raise ExplorerError(f"Entrant '{entrant.name}': {error}") from None


def to_train(race: Race) -> list[Path]:
    """The entrants' runs still queued, in race order."""
    return [folder for folder in race.run_folders() if runs.status(folder).get("state") == "queued"]


def write_base(race: Race, base: dict) -> None:
    runs.write_json(race.folder / "base.json", base)
    race.base = base


def base_key(race_settings: RaceSettings) -> str:
    """What the base model's scores depend on: a race with the same key reuses them."""
    keys = ("model", "dataset", "score", "seq_len", "eval_loss_examples", "eval_examples", "probe_examples",
            "max_new_tokens")
    # "scoring": 2 since task and probe prompts share one generation batch (padding changes rounding); 3 since
    # the base's held-out loss is measured in the entrants' batches (before, 8 examples where they used 4).
    keys += ("batch_size",)
    return json.dumps({**{k: getattr(race_settings, k) for k in keys}, "scoring": 3}, sort_keys=True)
