"""Running a race: the base model scored once, then every entrant trained in turn, in this process.

The web server never trains: it queues the race as one job whose worker (``python -m explorer.race.worker
RACE_DIR``) calls ``run``; the CLI calls it in its own process. Each entrant goes through the run lifecycle
(explorer.train.lifecycle.execute), so an entrant that fails (out of memory, a bad setting) is recorded as
failed and the race goes on; Stop ends the entrant training now and cancels the ones not started.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .. import evaluate
from .. import scored
from ..data import chat, scores, sources
from ..models import loading
from ..train import lifecycle, runs
from .races import STOP_FILE, Race, base_key, list_races, read_race, write_base



def evaluate_base(race: Race) -> dict:
    """Held-out loss, task score and probe score of the untouched base model, as the entrants are scored
    (the same rows, sequence length and generation length). Reused from an earlier race with the same key."""
    key = base_key(race.settings)
    for other in list_races():
        if other.race_id != race.race_id and other.base.get("key") == key and "error" not in other.base:
            return {**other.base, "reused_from": other.race_id}
    started = time.time()
    s = race.settings
    loaded = loading.load_fresh(s.model, precision="fp32")
    model, tok = loaded.model.eval(), loaded.tokenizer
    _, heldout = sources.load_dataset(s.dataset)
    encoded, _ = chat.encode_dataset(tok, heldout, s.seq_len)
    task = scores.task_for(s.dataset, s.score)
    task_score, probe_score = scored.task_and_probe_scores(model, tok, heldout[:s.eval_examples], task,
                                                          s.probe_examples, s.max_new_tokens, loaded.device)
    # The entrants' loop measures in batches of batch_size and stops starting batches at eval_loss_examples:
    # the same batches here, so the base and the entrants are scored on the same held-out examples.
    return {"key": key, "heldout_loss": evaluate.heldout_loss(model, encoded, chat.pad_id(tok), loaded.device,
                                                              batch_size=s.batch_size, limit=s.eval_loss_examples),
            "task_score": task_score, "probe_score": probe_score,
            "task": task.name if task else None, "seconds": time.time() - started}


def request_stop(race: Race) -> None:
    """Stop the race: no entrant starts after this, and the one training stops after its current step."""
    try:
        (race.folder / STOP_FILE).touch()
    except OSError as error:
        raise runs.not_writable(race.folder / STOP_FILE, error) from None
    for folder in race.run_folders():
        state = runs.status(folder).get("state")
        if state == "running":
            lifecycle.request_stop(folder)
        elif state == "queued":
            lifecycle.cancel(folder)


def stop_requested(race: Race) -> bool:
    return (race.folder / STOP_FILE).exists()


def run(race: Race, on_event: Callable[[dict], None] = lambda e: None) -> Race:
    """Score the base (once), then train the race's queued entrants in order; returns the race re-read."""
    if not race.base and not stop_requested(race):
        on_event({"event": "race", "state": "scoring the base model"})
        try:
            base = evaluate_base(race)
        except Exception as error:  # noqa: BLE001 - the entrants still train; the table says why "before" is blank
            base = {"key": base_key(race.settings), "error": f"{type(error).__name__}: {str(error)[:300]}"}
        write_base(race, base)
    for entrant, folder in zip(race.entrants, race.run_folders()):
        if stop_requested(race):
            lifecycle.cancel(folder)
            continue
        if runs.status(folder).get("state") != "queued":
            continue  # reused from an earlier race, or cancelled
        on_event({"event": "entrant", "name": entrant["name"], "run_id": folder.name, "state": "training"})
        outcome = lifecycle.execute(folder, [lambda event, name=entrant["name"]: on_event({**event, "entrant": name})])
        on_event({"event": "entrant", "name": entrant["name"], "run_id": folder.name, "state": outcome.state,
                  **({"error": outcome.error} if outcome.error else {})})
    return read_race(race.race_id)


def worker_main(race_dir: Path) -> int:
    return 0 if run(read_race(race_dir.name)) else 1
