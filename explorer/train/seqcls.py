"""The LoRA baseline of a classifier-head run: the same task trained with LoRA on a sequence-classification copy of
the same model, for comparison (accuracy, macro-F1, trainable parameters, time).

transformers' ``AutoModelForSequenceClassification`` puts a new linear ``score`` layer on the last non-padding
token's hidden state; PEFT's LoRA for ``task_type="SEQ_CLS"`` adds LoRA's defaults (explorer.methods.lora: r=8
on every linear layer of the block) and trains the score layer whole (PEFT adds it to ``modules_to_save``).
Same data, steps, batch size, seed and sequence length as the head; LoRA's default learning rate.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..data import chat
from ..methods import lora
from ..models import loading
from . import head_eval

FOLDER = "lora_comparison"  # inside the run's adapter folder
TITLE = "LoRA on a sequence-classification model"


def _peft_config(spec):
    """LoRA's own config at its defaults (explorer.methods.lora), for a sequence-classification model: PEFT's
    SEQ_CLS task type also trains the new score head (its modules_to_save)."""
    import dataclasses

    return dataclasses.replace(lora.peft_lora_config(spec, lora.LoraOptions()), task_type="SEQ_CLS")


def predict(model, encoded: list[list[int]], pad_id: int, device: str, batch_size: int) -> list[int]:
    import torch

    predicted = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            input_ids, mask = head_eval.padded(encoded[start:start + batch_size], pad_id, device)
            predicted += model(input_ids=input_ids, attention_mask=mask).logits.argmax(dim=-1).tolist()
    model.train(was_training)
    return predicted


def train_and_score(config, labels: list[str], train_rows: list[dict], heldout_rows: list[dict], batches,
                    should_stop=lambda: False):
    """(the trained PEFT model, its result) — or (None, None) when stopped first. ``batches`` yields lists of
    training-row indices, the order the head trained in."""
    import torch
    from peft import get_peft_model

    started = time.time()
    loaded = loading.load_sequence_classifier(config.model, len(labels), config.precision)
    tok, device = loaded.tokenizer, loaded.device
    pad = chat.pad_id(tok)
    model = get_peft_model(loaded.model, _peft_config(loaded.spec))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lora.METHOD.default_lr, weight_decay=0.0)
    train_ids, _ = head_eval.encode_texts(tok, [r["text"] for r in train_rows], config.seq_len)
    targets = torch.tensor([labels.index(r["label"]) for r in train_rows], device=device)
    model.train()
    train_seconds = 0.0
    for _ in range(config.steps):
        if should_stop():
            return None, None
        step_start = time.time()
        chosen = next(batches)
        input_ids, mask = head_eval.padded([train_ids[i] for i in chosen], pad, device)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=targets[chosen]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_seconds += time.time() - step_start
    heldout_ids, _ = head_eval.encode_texts(tok, [r["text"] for r in heldout_rows], config.seq_len)
    true = [labels.index(r["label"]) for r in heldout_rows]
    predicted = predict(model, heldout_ids, pad, device, config.batch_size)
    return model, {"method": TITLE, "accuracy": head_eval.accuracy(predicted, true),
                   "macro_f1": head_eval.macro_f1(predicted, true, len(labels)),
                   "trainable_params": sum(p.numel() for p in trainable), "train_seconds": train_seconds,
                   "seconds": time.time() - started, "predicted": predicted}


def load(config, labels: list[str], adapter_dir: Path):
    """A saved LoRA baseline on a fresh sequence-classification copy of its base (Compare), in eval mode."""
    from peft import PeftModel

    loaded = loading.load_sequence_classifier(config.model, len(labels), config.precision)
    model = PeftModel.from_pretrained(loaded.model, str(adapter_dir / FOLDER), is_trainable=False).eval()
    return model, loaded.tokenizer, loaded.device
