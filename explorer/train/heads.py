"""Training the feature-extraction heads for real: a classifier on labelled text, sentence embeddings on pairs.

The backbone is frozen, so each text goes through it once: its mean-pooled final hidden states are computed
once (the chapter's "feature extraction"), and every optimizer step trains the head on a batch of them, which
gives exactly the gradients a full forward would. The run keeps the chat loop's shape (explorer.train.loop):
the same events ("data", "start", "step" with loss and held-out loss, "eval", "score") and summary keys, so the
Fine-tune tab, the runs table and the CLI show it unchanged, plus the head's own results:
  classifier  accuracy and macro-F1 on the held-out rows against the majority class, the confusion matrix, and
              the same task trained with LoRA on a sequence-classification model (explorer.train.seqcls);
  embedding   retrieval recall@1 on the held-out pairs (each a must find its b among all held-out b's) of the
              untrained mean-pooled base and of the trained head, and cosine matrices of a few pairs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import Callable

from .. import calculator
from ..costs import memory
from ..data import chat, labelled, sources
from ..methods import METHODS
from . import head_eval, process_memory, runs, seqcls
from .config import TrainConfig
from .divergence import Watch
from .phases import (make_optimizer, peak_memory_bytes, prepare, reset_peak_memory, run_summary, seed_everything,
                     stopped_before_training)

TEMPERATURE = 0.05  # of the contrastive loss (SimCSE, Gao et al. 2021, §3)
HEATMAP_PAIRS = 6   # pairs in the cosine-similarity heatmaps
LABELS_FILE = "labels.json"  # in a classifier run's adapter folder: the class names, in output order


def index_batches(count: int, batch_size: int, seed: int):
    """Endless shuffled passes over ``count`` rows, as lists of indices (the chat loop's order, by seed)."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            more = list(range(count))
            rng.shuffle(more)
            order.extend(more)
        chosen, order = order[:batch_size], order[batch_size:]
        yield chosen


def train_head(config: TrainConfig, options_values: dict, run_dir: Path,
               on_event: Callable[[dict], None] = lambda e: None, should_stop: Callable[[], bool] = lambda: False,
               inspect_model: Callable[[str, object], None] | None = None) -> dict:
    """Train a classifier or embedding head (the method's data kind says which); return the run summary."""
    import torch

    started = time.time()
    method = METHODS[config.method]
    options = method.parse_options(options_values)
    kind = method.data_kind(options)
    sources.require_kind(config.dataset, kind, method.title)
    train_rows, heldout_rows = sources.load_rows(config.dataset, kind)
    labels = labelled.check_classes(train_rows, "the training rows") if kind == "labelled" else []
    if labels:  # the classes come from the data, whatever num_classes said
        options = dataclasses.replace(options, num_classes=len(labels))
    saved_options = dataclasses.asdict(options)
    seed_everything(config.seed)
    prep = prepare(config, saved_options)
    if should_stop():
        return stopped_before_training(config, run_dir, started)
    tok, device, pad = prep.tokenizer, prep.device, chat.pad_id(prep.tokenizer)
    fields = ("text",) if kind == "labelled" else ("a", "b")
    texts = {(split, f): [r[f] for r in rows] for split, rows in (("train", train_rows), ("heldout", heldout_rows))
             for f in fields}
    encoded = {key: head_eval.encode_texts(tok, value, config.seq_len) for key, value in texts.items()}
    truncated = sum(count for split_field, (_, count) in encoded.items() if split_field[0] == "train")
    on_event({"event": "data", "train_examples": len(train_rows), "heldout_examples": len(heldout_rows),
              "truncated": truncated, "task": "accuracy" if kind == "labelled" else "recall@1"})
    model = method.apply(prep.model, prep.spec, options)
    if inspect_model:
        inspect_model("before", model)
    # What the process holds besides the model's tensors (0 on CUDA), as the chat loop measures it: in the peak.
    baseline = process_memory.runtime_baseline_bytes(model, device)
    reset_peak_memory(device, collected=True)  # the backbone's forward over the texts is part of the head's training
    feature_start = time.time()
    features = {}
    for key, (ids, _) in encoded.items():
        features[key] = head_eval.pooled_matrix(model.backbone, ids, pad, device, config.batch_size, should_stop)
        if features[key] is None:
            return stopped_before_training(config, run_dir, started)
    feature_seconds = time.time() - feature_start
    tokens = sum(len(text_ids) for ids, _ in encoded.values() for text_ids in ids)
    trainer = _Classifier(labels, train_rows, heldout_rows) if kind == "labelled" else _Embedder()
    lr = config.learning_rate or method.default_lr
    trainable = [p for p in model.parameters() if p.requires_grad]
    predicted = calculator.calculate(prep.spec, config.method, options, memory.TrainSettings(
        batch_size=config.batch_size, seq_len=config.seq_len, precision=config.precision,
        optimizer=config.optimizer, gradient_checkpointing=config.gradient_checkpointing), exact_mode="skip")
    predicted_peak = memory.process_peak(predicted.training, baseline, device).total_bytes
    peak_keys = {"predicted_peak_bytes": predicted_peak, "peak_memory_predicted_bytes": predicted_peak,
                 "runtime_baseline_bytes": baseline}  # the track record's pair (explorer.train.track_record)
    if config.score_base:
        base = trainer.base_score(features)
        on_event({"event": "score", "which": "base", "score": base})
    on_event({"event": "start", "trainable_params": sum(p.numel() for p in trainable),
              "calculator_trainable_params": predicted.trainable_formula,
              **peak_keys, "learning_rate": lr, "steps": config.steps,
              "device": device, "feature_seconds": feature_seconds, "cpu_threads": torch.get_num_threads(),
              "niceness": os.nice(0)})
    optimizer = make_optimizer(config.optimizer, trainable, lr)
    batches = index_batches(len(train_rows), config.batch_size, config.seed)
    losses, eval_losses, stopped, train_seconds = [], [], False, feature_seconds
    guard = Watch(lr, method.default_lr)  # the chat loop's divergence rule (explorer/train/divergence.py)
    model.train()
    if config.score_base:
        eval_losses.append((0, trainer.heldout_loss(model, features, config.batch_size)))
        guard.eval_loss(0, eval_losses[-1][1])
        on_event({"event": "eval", "step": 0, "eval_loss": eval_losses[-1][1]})
    for step in range(1, config.steps + 1):
        if should_stop():
            stopped = True
            break
        step_start = time.time()
        loss = trainer.loss(model, features, next(batches))
        loss.backward()
        if guard.train_loss(step, float(loss.detach())) and not torch.isfinite(loss):  # no update from a nan
            on_event({"event": "diverged", "step": step, "message": guard.message()})
            break
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        train_seconds += time.time() - step_start
        event = {"event": "step", "step": step, "loss": losses[-1], "elapsed": train_seconds,
                 "eta": (train_seconds - feature_seconds) / step * (config.steps - step),
                 "tokens_per_second": tokens / max(train_seconds, 1e-9),  # each text through the backbone once
                 "peak_memory_bytes": peak_memory_bytes(device)}
        if step % config.eval_every == 0 or step == config.steps:
            eval_losses.append((step, trainer.heldout_loss(model, features, config.batch_size)))
            event["eval_loss"] = eval_losses[-1][1]
            guard.eval_loss(step, eval_losses[-1][1])
        on_event(event)
        if guard.diverged:
            on_event({"event": "diverged", "step": step, "message": guard.message()})
            break
    model.eval()
    head_peak = peak_memory_bytes(device)
    if inspect_model:
        inspect_model("after", model)
    results = trainer.results(model, features) if losses else {}
    if results:
        on_event({"event": "score", "which": "adapted", "score": results["score"]})
        on_event({"event": trainer.name, **results["event"]})
    comparison, extra = None, None
    if losses and kind == "labelled" and getattr(options, "lora_comparison", True) and not should_stop():
        lora_model, comparison = seqcls.train_and_score(
            config, labels, train_rows, heldout_rows, index_batches(len(train_rows), config.batch_size, config.seed),
            should_stop)
        if comparison is not None:
            on_event({"event": "comparison", **{k: v for k, v in comparison.items() if k != "predicted"}})
            extra = lambda folder: lora_model.save_pretrained(str(folder / seqcls.FOLDER), safe_serialization=True)  # noqa: E731
    if losses and labels:  # the class names, in the order of the head's outputs
        extra = _with_labels(extra, labels)
    summary = {
        **run_summary(run_dir, config, losses, eval_losses),
        "trainable_params": sum(p.numel() for p in trainable),
        "calculator_trainable_params": predicted.trainable_formula,
        "task_score_base": trainer.base_score(features), "task_score_adapted": results.get("score"),
        "probe_score_base": None, "probe_score": None,
        "tokens_per_second": tokens / max(train_seconds, 1e-9), "peak_memory_bytes": head_peak,
        **peak_keys, "stopped": stopped,
        "diverged": guard.diverged is not None, "divergence": guard.message() or None,
        "seconds": time.time() - started, "train_seconds": train_seconds, "feature_seconds": feature_seconds,
        "tokens_seen": tokens, "truncated_examples": truncated, "data_kind": kind,
        **results.get("summary", {}),
    }
    if comparison is not None:
        summary["lora_comparison"] = {k: v for k, v in comparison.items() if k != "predicted"}
    if losses:
        runs.save_artifacts(model, run_dir, config, saved_options, uses_peft=False, extra=extra)
        summary["saved_bytes"] = runs.disk_usage_bytes(run_dir / runs.ADAPTER_DIR)
    summary["seconds"] = time.time() - started
    runs.write_json(run_dir / "summary.json", summary)
    return summary


def _with_labels(then, labels: list[str]):
    def write(folder: Path) -> None:
        (folder / LABELS_FILE).write_text(json.dumps(labels, ensure_ascii=False), encoding="utf-8")
        if then is not None:
            then(folder)
    return write


class _Classifier:
    """Cross-entropy on class logits; accuracy and macro-F1 against the majority class."""

    name = "classification"

    def __init__(self, labels: list[str], train_rows: list[dict], heldout_rows: list[dict]):
        import torch

        self.labels = labels
        self.train_y = torch.tensor([labels.index(r["label"]) for r in train_rows])
        self.heldout_y = [labels.index(r["label"]) for r in heldout_rows]
        self.majority = head_eval.majority(self.train_y.tolist(), len(labels))

    def loss(self, model, features, chosen: list[int]):
        import torch

        x = features[("train", "text")][chosen]
        return torch.nn.functional.cross_entropy(model.from_features(x), self.train_y[chosen].to(x.device))

    def heldout_loss(self, model, features, batch_size: int) -> float:
        import torch

        x = features[("heldout", "text")]
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(model.from_features(x),
                                                           torch.tensor(self.heldout_y, device=x.device)))

    def base_score(self, features) -> float:
        return head_eval.accuracy([self.majority] * len(self.heldout_y), self.heldout_y)

    def results(self, model, features) -> dict:
        import torch

        with torch.no_grad():
            predicted = model.from_features(features[("heldout", "text")]).argmax(dim=-1).tolist()
        n, true = len(self.labels), self.heldout_y
        base = [self.majority] * len(true)
        numbers = {"eval_accuracy": head_eval.accuracy(predicted, true), "eval_macro_f1": head_eval.macro_f1(
                   predicted, true, n), "eval_accuracy_base": self.base_score(features),
                   "eval_macro_f1_base": head_eval.macro_f1(base, true, n), "labels": self.labels,
                   "majority_label": self.labels[self.majority]}
        matrix = head_eval.confusion(predicted, true, n)
        return {"score": numbers["eval_accuracy"], "summary": {**numbers, "confusion_matrix": matrix},
                "event": {**numbers, "confusion_matrix": matrix}}


class _Embedder:
    """Symmetric in-batch contrastive loss on pairs; recall@1 of the untrained pooled base and of the head."""

    name = "embedding"

    def loss(self, model, features, chosen: list[int]):
        return head_eval.contrastive_loss(model.from_features(features[("train", "a")][chosen]),
                                          model.from_features(features[("train", "b")][chosen]), TEMPERATURE)

    def heldout_loss(self, model, features, batch_size: int) -> float:
        """The same loss over the held-out pairs, in batches of the training batch size (the same number of
        negatives per pair as in training)."""
        import torch

        a, b = features[("heldout", "a")], features[("heldout", "b")]
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(a), batch_size):
                part = slice(start, start + batch_size)
                total += float(head_eval.contrastive_loss(model.from_features(a[part]), model.from_features(b[part]),
                                                          TEMPERATURE)) * len(a[part])
        return total / len(a)

    def base_score(self, features) -> float:
        return head_eval.recall_at_1(features[("heldout", "a")], features[("heldout", "b")])

    def results(self, model, features) -> dict:
        import torch

        a, b = features[("heldout", "a")], features[("heldout", "b")]
        with torch.no_grad():
            ea, eb = model.from_features(a), model.from_features(b)
        k = min(HEATMAP_PAIRS, len(a))
        numbers = {"eval_recall_at_1_base": self.base_score(features), "eval_recall_at_1": head_eval.recall_at_1(ea, eb)}
        heat = {"heatmap_pairs": k, "similarity_base": head_eval.cosine(a[:k], b[:k]).tolist(),
                "similarity": head_eval.cosine(ea[:k], eb[:k]).tolist()}
        return {"score": numbers["eval_recall_at_1"], "summary": {**numbers, **heat}, "event": {**numbers, **heat}}
