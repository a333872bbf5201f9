"""The training loop: real short fine-tunes of every method, reporting through callbacks.

The loop knows nothing of its UI (minGPT's trainer): it calls ``on_event(dict)`` for every step and
evaluation, and the caller writes them to the run's log.jsonl, prints them, or streams them. It
runs in the CLI's process or in a worker process started by explorer.train.jobs, never in the web server.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from pathlib import Path
from typing import Callable

from .. import calculator, evaluate, learned
from ..costs import memory
from .. import scored
from ..data import chat, scores, sources
from ..methods import METHODS
from ..methods.base import TrainingData
from . import process_memory, runs, timeline
from .config import TrainConfig
from .divergence import Watch
from .phases import (Prepared, make_optimizer, optimizer_class, peak_memory_bytes, prepare,  # noqa: F401
                     reset_peak_memory, run_summary, seed_everything, stopped_before_training)



@contextlib.contextmanager
def merged_while_scoring(model, method):
    """The adapter folded into the weights (PEFT's merge_adapter) while the trained model generates, then
    unfolded. The same function up to rounding (Compare checks merged and adapted greedy replies match), and
    generation stops paying the adapter's extra matmuls per token: measured on the bundled model, DoRA's
    scoring took 30 s unmerged and 9 s merged (it recomputes its weight norms at every forward), LoRA's 11.3 s
    and 9.5 s. Not for QLoRA: merging re-rounds the 4-bit weights, nor for a tuner PEFT cannot unmerge (OSF)."""
    fold = (method.uses_peft and method.mergeable and method.unmerges and not method.quantized_base
            and hasattr(model, "merge_adapter"))
    if fold:
        model.merge_adapter()
    try:
        yield
    finally:
        if fold:
            model.unmerge_adapter()

def batches(encoded: list, batch_size: int, pad_id: int, seed: int):
    """Endless shuffled passes over the data, one seed-determined order per epoch."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            more = list(range(len(encoded)))
            rng.shuffle(more)
            order.extend(more)
        chosen, order = order[:batch_size], order[batch_size:]
        yield chat.collate([encoded[i] for i in chosen], pad_id)


def train(config: TrainConfig, options_values: dict, run_dir: Path,
          on_event: Callable[[dict], None] = lambda e: None, should_stop: Callable[[], bool] = lambda: False,
          inspect_model: Callable[[str, object], None] | None = None) -> dict:
    """Fine-tune, evaluate before and after, save the adapter atomically; return the run summary.

    ``inspect_model(stage, model)`` is called with stage "before" (method applied, nothing trained)
    and "after" (trained, before saving): tests use it to check what changed."""
    import torch

    method = METHODS[config.method]
    if method.data_kind(method.parse_options(options_values)) != "chat":  # a classifier or embedding head
        from .heads import train_head

        return train_head(config, options_values, run_dir, on_event, should_stop, inspect_model)
    sources.require_kind(config.dataset, "chat", method.title)
    started = time.time()
    seed_everything(config.seed)
    prep = prepare(config, options_values)
    if should_stop():  # stopped while the model loaded: nothing to train, nothing to save
        return stopped_before_training(config, run_dir, started)
    lr = config.learning_rate or method.default_lr
    train_rows, heldout_rows = sources.load_dataset(config.dataset)
    task = scores.task_for(config.dataset, config.score)
    tok = prep.tokenizer
    pad_id = chat.pad_id(tok)
    train_enc, truncated = chat.encode_dataset(tok, train_rows, config.seq_len)
    heldout_enc, _ = chat.encode_dataset(tok, heldout_rows, config.seq_len)
    on_event({"event": "data", "train_examples": len(train_enc), "heldout_examples": len(heldout_enc),
              "truncated": truncated, "task": task.name if task else None})
    # What it learned (explorer.learned) needs the base model's replies: measured with the base's scores, in
    # the same batched generation (held-out questions, up to learned.FACT_QUESTIONS training questions, probe).
    learning = config.score_base
    fact_rows = train_rows if learning else []
    asked_base = scored.ScoredQuestions(heldout_rows[:config.eval_examples] if learning else [], task,
                                       config.probe_examples if learning else 0, resemble=learning, fact_rows=fact_rows)
    replies = asked_base.ask(prep.model, tok, config.max_new_tokens, prep.device, should_stop=should_stop)
    if replies is None or should_stop():  # stopped while the base model was scored
        return stopped_before_training(config, run_dir, started)
    score_base, probe_base = asked_base.scores(replies)
    learned_base = asked_base.learned(replies) if learning else None
    if score_base is not None:
        on_event({"event": "score", "which": "base", "score": score_base})
    if probe_base is not None:
        on_event({"event": "probe", "which": "base", "score": probe_base})
    eval_rows = heldout_rows[:config.eval_examples]

    if method.apply_for_training:  # a build that reads the run: its length, a few batches (apart from the stream)
        sample = batches(train_enc, config.batch_size, pad_id, config.seed + 1)
        data = TrainingData(config.steps, lambda n: [{k: v.to(prep.device) for k, v in next(sample).items()}
                                                     for _ in range(n)], should_stop)
        model = method.apply_for_training(prep.model, prep.spec, prep.options, data)
        if should_stop():  # stopped while the method read its batches: nothing trained, nothing to save
            return stopped_before_training(config, run_dir, started)
    else:
        model = method.apply(prep.model, prep.spec, prep.options)
    if config.gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(base, "enable_input_require_grads"):
            base.enable_input_require_grads()
    # A scratch folder among the run's partial files (removed after saving, or with them when a worker ends).
    scratch = runs.scratch_folder(run_dir)
    save_kwargs = method.before_training(model, scratch)
    if inspect_model:
        inspect_model("before", model)
    model.train()
    trainable = [p for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad]
    measured_trainable = sum(p.numel() for p in trainable)
    predicted = calculator.calculate(prep.spec, config.method, prep.options, memory.TrainSettings(
        batch_size=config.batch_size, seq_len=config.seq_len, precision=config.precision,
        optimizer=config.optimizer, gradient_checkpointing=config.gradient_checkpointing), exact_mode="skip")
    # What the process holds besides the model's tensors (0 on CUDA): in its measured peak, so in the prediction.
    baseline = process_memory.runtime_baseline_bytes(model, prep.device)
    predicted_peak = memory.process_peak(predicted.training, baseline, prep.device)
    peak_keys = {"predicted_peak_bytes": predicted_peak.total_bytes,
                 "peak_memory_predicted_bytes": predicted_peak.total_bytes, "runtime_baseline_bytes": baseline}
    on_event({"event": "start", "trainable_params": measured_trainable,
              "calculator_trainable_params": predicted.trainable_formula,
              **peak_keys, "learning_rate": lr, "steps": config.steps,
              "device": prep.device, "cpu_threads": torch.get_num_threads(), "niceness": os.nice(0)})
    optimizer = (method.make_optimizer(model, prep.options, lr, *optimizer_class(config.optimizer))
                 if method.make_optimizer else make_optimizer(config.optimizer, trainable, lr))
    reset_peak_memory(prep.device, collected=True)  # the baseline above has just collected
    stream = batches(train_enc, config.batch_size, pad_id, config.seed)
    losses, eval_losses, stopped, tokens_seen = [], [], False, 0
    guard = Watch(lr, method.default_lr)  # the divergence rule: explorer/train/divergence.py
    if config.score_base:  # a race measures the base model's held-out loss once for all its entrants
        eval_losses.append((0, evaluate.heldout_loss(model, heldout_enc, pad_id, prep.device,
                                                     batch_size=config.batch_size, limit=config.eval_loss_examples)))
        guard.eval_loss(0, eval_losses[-1][1])
        on_event({"event": "eval", "step": 0, "eval_loss": eval_losses[-1][1]})
    watch = timeline.start(config, heldout_rows, model, tok, prep.device, on_event, should_stop)  # step 0's replies
    train_seconds = 0.0  # time in training steps only: held-out evaluations are not throughput
    for step in range(1, config.steps + 1):
        if should_stop():
            stopped = True
            break
        step_start = time.time()
        step_loss = 0.0
        for _ in range(config.grad_accum):
            batch = {k: v.to(prep.device) for k, v in next(stream).items()}
            tokens_seen += int(batch["attention_mask"].sum())
            loss = (method.training_loss or evaluate.loss_on_targets)(model, batch) / config.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
        if guard.train_loss(step, step_loss) and not math.isfinite(step_loss):  # no update from a nan or inf
            optimizer.zero_grad(set_to_none=True)
            on_event({"event": "diverged", "step": step, "message": guard.message()})
            break
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        method.after_step(model, step, config.steps)
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        train_seconds += time.time() - step_start
        event = {"event": "step", "step": step, "loss": step_loss, "elapsed": train_seconds,
                 "eta": train_seconds / step * (config.steps - step),
                 "tokens_per_second": tokens_seen / max(train_seconds, 1e-9),
                 "peak_memory_bytes": peak_memory_bytes(prep.device)}
        if step % config.eval_every == 0 or step == config.steps:
            eval_losses.append((step, evaluate.heldout_loss(model, heldout_enc, pad_id, prep.device,
                                                            batch_size=config.batch_size,  # memory ≤ a step's
                                                            limit=config.eval_loss_examples)))
            event["eval_loss"] = eval_losses[-1][1]
            guard.eval_loss(step, eval_losses[-1][1])
        on_event(event)
        if guard.diverged:
            on_event({"event": "diverged", "step": step, "message": guard.message()})
            break
        watch.after_step(model, step)  # the watched questions' replies every watch_every steps
    model.eval()
    if inspect_model:
        inspect_model("after", model)
    score_adapted, probe_adapted, learned_adapted = None, None, None
    # Weights a nan or inf reached have nothing to say: neither scored nor saved.
    usable = bool(losses) and all(bool(torch.isfinite(p).all()) for p in trainable)
    if usable:
        asked = scored.ScoredQuestions(eval_rows, task, config.probe_examples, resemble=learning, fact_rows=fact_rows)
        with merged_while_scoring(model, method):
            replies = asked.ask(model, tok, config.max_new_tokens, prep.device)
        score_adapted, probe_adapted = asked.scores(replies)
        learned_adapted = asked.learned(replies) if learning else None
    if score_adapted is not None:
        on_event({"event": "score", "which": "adapted", "score": score_adapted})
    if probe_adapted is not None:
        on_event({"event": "probe", "which": "adapted", "score": probe_adapted})
    what_it_learned = learned_keys(learned_base, learned_adapted, guard) if learning else {}
    if what_it_learned:
        on_event({"event": "learned", **what_it_learned})
    summary = {
        **run_summary(run_dir, config, losses, eval_losses),
        "trainable_params": measured_trainable, "calculator_trainable_params": predicted.trainable_formula,
        "task_score_base": score_base, "task_score_adapted": score_adapted,
        "probe_score_base": probe_base, "probe_score": probe_adapted,
        "tokens_per_second": tokens_seen / max(train_seconds, 1e-9),
        "peak_memory_bytes": peak_memory_bytes(prep.device), **peak_keys,
        "stopped": stopped, "seconds": time.time() - started, "train_seconds": train_seconds,
        "tokens_seen": tokens_seen, "truncated_examples": truncated,
        "diverged": guard.diverged is not None, "divergence": guard.message() or None, **what_it_learned,
    }
    if usable:
        runs.save_artifacts(model, run_dir, config, options_values, method.uses_peft, save_kwargs=save_kwargs)
        summary["saved_bytes"] = runs.disk_usage_bytes(run_dir / runs.ADAPTER_DIR)
    runs.remove_scratch(scratch)
    summary["seconds"] = time.time() - started  # saving included
    runs.write_json(run_dir / "summary.json", summary)
    return summary


def learned_keys(base: learned.Side, adapted: learned.Side | None, guard: Watch) -> dict:
    """The summary's (and the "learned" event's) what-it-learned numbers, counts and sentence; {} when the run
    neither trained a usable model nor diverged."""
    if adapted is None and not guard.diverged:
        return {}
    return {**learned.summary_keys(base, adapted), "verdict": learned.verdict(base, adapted, guard.diverged),
            "facts_checked": base.facts_checked, "probe_questions": base.probe_asked,
            "facts_recalled_base": base.facts_recalled,
            "facts_recalled_adapted": adapted.facts_recalled if adapted else None,
            "probe_right_base": base.probe_right, "probe_right_adapted": adapted.probe_right if adapted else None}
