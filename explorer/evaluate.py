"""Task scores from real generations on held-out examples (greedy, batched)."""

from __future__ import annotations

from .data import uploads as data
from .data.tasks import TASKS, Task


def task_for(dataset: str) -> Task | None:
    """The bundled task behind a dataset name (uploaded data has no automatic score)."""
    return TASKS.get(dataset)


def generate_token_ids(model, tokenizer, prompts: list[str], max_new_tokens: int, device: str,
                       batch_size: int = 16, temperature: float = 0.0, seed: int = 0) -> list[list[int]]:
    """New token ids for single user turns, in left-padded batches (decoder-only models pad on the left).
    Greedy by default; with temperature > 0 it samples, seeded so a rerun gives the same text."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = {pad, tokenizer.eos_token_id}
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
    replies = []
    was_training = model.training
    model.eval()
    if temperature > 0:
        torch.manual_seed(seed)
    for start in range(0, len(prompts), batch_size):
        chunk = [data.prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in chunk], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, **sampling)
        for row in out[:, width:].tolist():
            while row and row[-1] in stops:  # padding after an early end, and the end token itself
                row.pop()
            replies.append(row)
    model.train(was_training)
    return replies


def generate_replies(model, tokenizer, prompts: list[str], max_new_tokens: int, device: str,
                     batch_size: int = 16) -> list[str]:
    """Greedy replies to single user turns."""
    return [tokenizer.decode(ids, skip_special_tokens=True).strip()
            for ids in generate_token_ids(model, tokenizer, prompts, max_new_tokens, device, batch_size)]


def user_and_reference(row: dict) -> tuple[str, str]:
    messages = row["messages"]
    user = next(m["content"] for m in messages if m["role"] == "user")
    reference = [m["content"] for m in messages if m["role"] == "assistant"][-1]
    return user, reference


def task_score(model, tokenizer, rows: list[dict], task: Task | None, max_new_tokens: int, device: str):
    """The task's score on these rows, or None when there is no task or no row."""
    if task is None or not rows:
        return None
    prompts, references = zip(*(user_and_reference(r) for r in rows))
    replies = generate_replies(model, tokenizer, list(prompts), max_new_tokens, device)
    return task.score(replies, list(references))
