"""Evaluation of a model on held-out data: task scores from real generations (greedy, batched) and held-out loss."""

from __future__ import annotations

import functools

from .data import chat
from .data.tasks import Task


def generate_token_ids(model, tokenizer, prompts: list[str], max_new_tokens: int, device: str,
                       batch_size: int = 16, temperature: float = 0.0, seed: int = 0,
                       should_stop=None) -> list[list[int]]:
    """New token ids for single user turns, in left-padded batches (decoder-only models pad on the left).
    Greedy by default; with temperature > 0 it samples, seeded so a rerun gives the same text.
    ``should_stop``: checked after every generated token (a transformers stopping criterion), so a stop
    asked for during generation ends it at once without splitting the batch (each decoding step costs
    about the same for 4 prompts as for 16 on a CPU: smaller batches would multiply the time)."""
    import torch

    pad = chat.pad_id(tokenizer)
    stops = {pad, tokenizer.eos_token_id}
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
    replies = []
    was_training = model.training
    model.eval()
    if temperature > 0:
        torch.manual_seed(seed)
    stopping = {}
    if should_stop is not None:
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Asked(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), bool(should_stop()), dtype=torch.bool,
                                  device=input_ids.device)

        stopping = {"stopping_criteria": StoppingCriteriaList([Asked()])}
    for start in range(0, len(prompts), batch_size):
        if should_stop is not None and should_stop():
            break
        chunk = [chat.prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in chunk], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, **sampling, **stopping)
        for row in out[:, width:].tolist():
            while row and row[-1] in stops:  # padding after an early end, and the end token itself
                row.pop()
            replies.append(row)
    model.train(was_training)
    return replies


def generate_replies(model, tokenizer, prompts: list[str], max_new_tokens: int, device: str,
                     batch_size: int = 16, should_stop=None) -> list[str]:
    """Greedy replies to single user turns."""
    return [tokenizer.decode(ids, skip_special_tokens=True).strip()
            for ids in generate_token_ids(model, tokenizer, prompts, max_new_tokens, device, batch_size,
                                          should_stop=should_stop)]


def user_and_reference(row: dict) -> tuple[str, str]:
    messages = row["messages"]
    user = next(m["content"] for m in messages if m["role"] == "user")
    reference = [m["content"] for m in messages if m["role"] == "assistant"][-1]
    return user, reference


def task_score(model, tokenizer, rows: list[dict], task: Task | None, max_new_tokens: int, device: str,
               should_stop=None):
    """The task's score on these rows, or None when there is no task or no row, or when ``should_stop``
    returned True while the replies were generated (a stop asked for while a run scores its base model
    takes one generated token, not the whole scoring)."""
    if task is None or not rows:
        return None
    prompts, references = zip(*(user_and_reference(r) for r in rows))
    replies = generate_replies(model, tokenizer, list(prompts), max_new_tokens, device, should_stop=should_stop)
    if should_stop is not None and should_stop():
        return None
    return task.score(replies, list(references))


def _keeps_logits(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs do; PEFT passes it on).
    Asked every training step, so the answer is kept per model class."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes_logits_to_keep(type(base))


@functools.lru_cache(maxsize=None)
def _forward_takes_logits_to_keep(model_class) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def loss_on_targets(model, batch: dict):
    """The causal-LM loss of ``batch`` (mean over its target tokens, as ``model(**batch).loss``), with the
    vocabulary projection computed only from the first position that predicts a target.

    Why: a chat example's prompt (system turn + question) has no targets, yet the LM head projects every
    position onto the whole vocabulary. On the bundled model the head is ~21% of a forward's FLOPs (49,152 x
    576 of ~135M weights) and, in the pirate data's batches, 57% of the positions come before the batch's first
    target: LoRA's 20 race steps took 51.7 s instead of 61.9 s on 2 CPU cores. The kept positions are the
    last ones, so prompt tuning's virtual tokens (prepended) are cut off with the prompt. tests/test_scoring.py
    checks the value equals transformers' own loss for every method of the registry."""
    labels = batch["labels"]
    predicts = (labels[:, 1:] != -100).any(0)
    if not bool(predicts.any()) or not _keeps_logits(model):
        return model(**batch).loss
    first = int(predicts.nonzero()[0])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=labels.shape[1] - first).logits.float()
    import torch

    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             labels[:, first + 1:].reshape(-1), ignore_index=-100)


def heldout_loss(model, encoded: list, pad_id: int, device: str, batch_size: int = 8, limit: int = 16) -> float:
    """Mean loss per target token over the first ``limit`` encoded held-out examples (no gradients)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, min(len(encoded), limit), batch_size):
            batch = {k: v.to(device) for k, v in chat.collate(encoded[start:start + batch_size], pad_id).items()}
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            total += float(loss_on_targets(model, batch)) * tokens
            count += tokens
    model.train(was_training)
    return total / max(count, 1)
