"""Learned mixtures of LoRA adapters: LoRAHub's idea (Huang et al. 2023, "LoraHub: Efficient Cross-Task
Generalization via Dynamic LoRA Composition") at small scale.

Given N LoRA runs on one base and a handful of example rows of a target task, find weights w_1..w_N such that
the adapter PEFT's ``add_weighted_adapter(combination_type="cat")`` builds from them, ΔW = Σ w_i·ΔW_i exactly
(explorer.compare.compose), has the lowest loss on those rows. The search is gradient-free: CMA-ES (Hansen's
``cma`` package, the evolution strategy LoRAHub's optimiser family builds on) proposes weight vectors, each
is built for real and scored by one forward pass over the rows; no gradient flows through the base.
Following LoRAHub, the weights stay within [-1.5, 1.5] and the objective adds a small L1 penalty
(0.05·mean |w_i|) so that adapters that do not help drift to 0.

The result is checked on the target's held-out rows: the learned mixture against each adapter alone, the
uniform mixture (w_i = 1/N) and the base.
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from pathlib import Path

from ..errors import ExplorerError
from ..train import runs
from ..options import whole
from .compose import add_weighted

BOUND = 1.5
L1_PENALTY = 0.05
MIXTURE = "mixture"
MAX_RUNS = 8


# --------------------------------------------------------------------------- checks and inputs


def check_runs(run_ids) -> list:
    """Two or more LoRA runs (methods whose runs combine with 'cat') on one base model."""
    from .serve_many import parse_run_ids

    chosen = [runs.open_run(r) for r in parse_run_ids(run_ids)]
    if len(chosen) < 2:
        raise ExplorerError("A learned mixture needs at least two runs to weigh (choose 2 to "
                            f"{MAX_RUNS} LoRA runs on one base model).")
    if len(chosen) > MAX_RUNS:
        raise ExplorerError(f"{len(chosen)} runs given; mix at most {MAX_RUNS}.")
    for run in chosen:
        if "cat" not in run.method.combinations:
            raise ExplorerError(f"Run {run.run_id} uses {run.method.title} ({run.method.name}); learned mixtures "
                                "weigh LoRA adapters (PEFT's add_weighted_adapter): choose LoRA runs.")
        if not (run.folder / runs.ADAPTER_DIR / "adapter_model.safetensors").is_file():
            raise ExplorerError(f"The adapter of run {run.run_id} cannot be loaded: adapter_model.safetensors is "
                                "missing (only safetensors adapters are loaded).")
    for run in chosen[1:]:
        if run.config.model != chosen[0].config.model:
            raise ExplorerError(f"Runs {chosen[0].run_id} and {run.run_id} were trained on different base models "
                                f"({chosen[0].config.model} and {run.config.model}); adapters mix only on one base.")
    return chosen


def example_rows(examples, shots: int) -> list[dict]:
    """The few-shot rows: the first ``shots`` training rows of a bundled task, or of a JSONL/CSV file (all of
    its rows count: it is the handful of examples), or rows given as they are."""
    from ..data import sources
    from ..data.tasks import TASKS
    from ..data.uploads import parse_upload

    if isinstance(examples, (str, Path)) and str(examples) in TASKS:
        rows = sources.load_dataset(str(examples))[0]
    elif isinstance(examples, (str, Path)):
        path = Path(examples)
        if not str(examples).strip() or not path.is_file():
            raise ExplorerError(f"No examples file {str(examples)!r}: give a JSONL or CSV file of example rows, "
                                "or the name of a bundled task.")
        rows = parse_upload(path.read_bytes(), path.name).rows
    else:
        rows = list(examples or [])
    if not rows:
        raise ExplorerError("No example rows: give 5 to 10 rows of the target task.")
    return rows[:shots]


# --------------------------------------------------------------------------- the search


def load_adapters(chosen):
    """One fresh base with every run's adapter under "r0", "r1", ... (the shared loader of serve_many)."""
    from .serve_many import load_fleet

    return load_fleet(chosen)


def build(fleet, weights, name: str = MIXTURE) -> None:
    """(Re)build the mixture adapter Σ w_i·ΔW_i with add_weighted_adapter('cat') and make it active."""
    if name in fleet.model.peft_config:
        fleet.model.delete_adapter(name)
    add_weighted(fleet.model, fleet.names, [float(w) for w in weights], "cat", None, name=name)
    fleet.model.set_adapter(name)


def few_shot_loss(fleet, encoded, pad: int) -> float:
    from ..evaluate import heldout_loss

    return heldout_loss(fleet.model, encoded, pad, fleet.device, limit=len(encoded))


def search(fleet, encoded, pad: int, iterations: int = 8, seed: int = 0, on_iteration=lambda event: None) -> dict:
    """CMA-ES over the weights from the uniform mixture (step size 0.5): every candidate is built and scored on
    the example rows. ``on_iteration`` gets {"iteration", "evaluations", "best_loss", "mean_loss",
    "best_weights"} after each generation. Returns the best weights seen and the history."""
    with warnings.catch_warnings():  # cma warns at import that matplotlib (its plots) is missing
        warnings.simplefilter("ignore")
        import cma

    n = len(fleet.names)
    seen = {}

    def objective(weights) -> float:
        build(fleet, weights)
        loss = few_shot_loss(fleet, encoded, pad)
        seen[tuple(float(w) for w in weights)] = loss
        return loss + L1_PENALTY * sum(abs(w) for w in weights) / n

    options = {"bounds": [-BOUND, BOUND], "seed": seed + 1, "verbose": -9, "maxiter": iterations}
    strategy = cma.CMAEvolutionStrategy([1.0 / n] * n, 0.5, options)  # cma takes seed 0 as "random"
    history = []
    best = (math.inf, None)
    while not strategy.stop():
        candidates = strategy.ask()
        values = [objective(x) for x in candidates]
        strategy.tell(candidates, values)
        losses = [seen[tuple(float(w) for w in x)] for x in candidates]
        for value, x, loss in zip(values, candidates, losses):
            if value < best[0]:
                best = (value, [float(w) for w in x], loss)
        event = {"iteration": len(history) + 1, "evaluations": len(seen), "best_loss": best[2],
                 "mean_loss": sum(losses) / len(losses), "best_weights": best[1]}
        history.append(event)
        on_iteration(event)
    return {"weights": best[1], "few_shot_loss": best[2], "objective": best[0], "history": history}


# --------------------------------------------------------------------------- the experiment


def learn_weights(run_ids, examples, target=None, shots: int = 8, iterations: int = 8, heldout_examples: int = 8,
                  max_new_tokens: int = 32, on_iteration=lambda event: None) -> dict:
    """Search the mixture's weights on ``shots`` example rows, then score on the target's held-out rows the
    base, each adapter alone, the uniform mixture and the learned one (held-out loss, and the task score
    when the target has one). ``target``: a bundled task or a dataset file (default: ``examples`` when it
    names a bundled task)."""
    from ..data import chat, scores, sources
    from ..data.tasks import TASKS
    from ..evaluate import heldout_loss, task_score
    from ..generate import check_max_new_tokens

    chosen = check_runs(run_ids)
    shots = whole("examples to learn from", shots, 1, 32)
    iterations = whole("iterations", iterations, 1, 100)
    heldout_examples = whole("held-out examples", heldout_examples, 1, 64)
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    if target is None:
        if not (isinstance(examples, str) and examples in TASKS):
            raise ExplorerError("Name the target task whose held-out rows score the mixture (a bundled task or a "
                                "dataset file): the examples file alone has no held-out rows.")
        target = examples
    rows = example_rows(examples, shots)
    heldout = sources.load_dataset(target)[1][:heldout_examples]
    fleet = load_adapters(chosen)
    seq_len = max(run.config.seq_len for run in chosen)
    pad = chat.pad_id(fleet.tokenizer)
    encoded, _ = chat.encode_dataset(fleet.tokenizer, rows, seq_len)
    held_encoded, _ = chat.encode_dataset(fleet.tokenizer, heldout, seq_len)
    n = len(chosen)
    with fleet.lock:
        build(fleet, [1.0 / n] * n)
        few_shot_uniform = few_shot_loss(fleet, encoded, pad)
        found = search(fleet, encoded, pad, iterations, on_iteration=on_iteration)
        task = scores.task_for(str(target), "")
        variants = {"base": None, **{run.run_id: [1.0 if j == i else 0.0 for j in range(n)]
                                     for i, run in enumerate(chosen)},
                    "uniform mixture": [1.0 / n] * n, "learned mixture": found["weights"]}
        evaluation = {}
        for label, weights in variants.items():
            if weights is None:
                context = fleet.model.disable_adapter()
            else:
                build(fleet, weights)
                context = nullcontext()
            with context:
                evaluation[label] = {
                    "few_shot_loss": few_shot_loss(fleet, encoded, pad),
                    "heldout_loss": heldout_loss(fleet.model, held_encoded, pad, fleet.device,
                                                 limit=len(held_encoded)),
                    "task_score": task_score(fleet.model, fleet.tokenizer, heldout, task, max_new_tokens,
                                             fleet.device)}
    result = {"runs": [run.run_id for run in chosen], "datasets": [run.dataset_label for run in chosen],
              "model": chosen[0].config.model, "target": str(target), "shots": len(rows),
              "heldout_examples": len(heldout), "iterations": iterations, "task": task.name if task else None,
              "weights": dict(zip([run.run_id for run in chosen], found["weights"])),
              "few_shot_loss": {"uniform mixture": few_shot_uniform, "learned mixture": found["few_shot_loss"]},
              "history": found["history"], "evaluation": evaluation,
              "search": {"optimizer": "CMA-ES (cma)", "bounds": [-BOUND, BOUND], "l1_penalty": L1_PENALTY,
                         "start": "uniform mixture", "combination": "cat"}}
    result["summary"] = summarize(result)
    return result


def summarize(result: dict) -> str:
    ev = result["evaluation"]
    learned, uniform = ev["learned mixture"], ev["uniform mixture"]
    heaviest = max(result["weights"], key=lambda r: result["weights"][r])
    label = dict(zip(result["runs"], result["datasets"]))
    singles = [r for r in result["runs"]]
    best_single = min(singles, key=lambda r: ev[r]["heldout_loss"])
    text = (f"On {result['shots']} examples of {result['target']}, the search lowered the loss from "
            f"{result['few_shot_loss']['uniform mixture']:.3f} (uniform mixture) to "
            f"{result['few_shot_loss']['learned mixture']:.3f}; the largest weight "
            f"({result['weights'][heaviest]:+.2f}) went to {heaviest} ({label[heaviest]}). On "
            f"{result['heldout_examples']} held-out rows: learned mixture loss {learned['heldout_loss']:.3f}, "
            f"uniform {uniform['heldout_loss']:.3f}, best single adapter {ev[best_single]['heldout_loss']:.3f} "
            f"({best_single}, {label[best_single]})")
    if result["task"]:
        text += (f"; task score learned {learned['task_score']:.2f}, uniform {uniform['task_score']:.2f}, "
                 f"best single {max(ev[r]['task_score'] for r in singles):.2f}")
    return text + "."
