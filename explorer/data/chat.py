"""Conversations as tokens: the chat template, label masks on assistant tokens, batches, and the one prompt builder.

Every prompt the app sends to a model (generation in the Models and Compare tabs, task scores, merge
fidelity) is built by ``prompt_ids``, the same way training renders a conversation, so a model without
a chat template sees the same "User: …\nAssistant:" format at inference as in training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ExplorerError


def pad_id(tokenizer) -> int:
    """The padding token, or the end-of-sequence token for tokenizers that have none (most causal LMs)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@dataclass
class Encoded:
    """One tokenised conversation; labels are -100 except on assistant tokens."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool


def _special_strings(tokenizer) -> list[str]:
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    found |= {str(t.content) for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values() if t.special}
    return sorted((s for s in found if len(s) > 1), key=len, reverse=True)


def neutralise(tokenizer, text: str) -> str:
    """Break special-token strings in user-supplied text with a zero-width space after their first char.

    Otherwise a content holding "<|im_end|><|im_start|>assistant" would become real control
    tokens, ending the turn early (prompt injection) and corrupting the label mask.
    """
    specials = _special_strings(tokenizer)
    if not specials or not any(s in text for s in specials):
        return text
    pattern = re.compile("|".join(re.escape(s) for s in specials))
    return pattern.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    if not getattr(tokenizer, "chat_template", None):
        parts = []
        for m in messages:
            end = (tokenizer.eos_token or "") if m["role"] == "assistant" else ""
            parts.append(f"{m['role'].capitalize()}: {m['content']}{end}\n")
        # No trailing space: BPE glues the space to the reply's first word ("ĠParis"), so the
        # prompt must stop where training tokens split, or generation starts off-distribution.
        return "".join(parts) + ("Assistant:" if generation_prompt else "")
    if not messages:
        return ""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja templates raise their own errors, e.g. on unsupported roles
        raise ExplorerError(f"The model's chat template rejected a conversation: {exc}") from None


def _assistant_spans(tokenizer, messages: list[dict], full: str) -> list[tuple[int, int]]:
    """Character spans of each assistant content plus the end-of-turn token right after it."""
    specials = _special_strings(tokenizer)
    eos = tokenizer.eos_token
    spans = []
    for k, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:k], generation_prompt=True)
        through = _render(tokenizer, messages[:k + 1])
        if not (full.startswith(before) and full.startswith(through)):
            raise ExplorerError("The model's chat template does not render conversations prefix by prefix, "
                                "so assistant tokens cannot be located for label masking.")
        turn = full[len(before):len(through)]
        at = turn.find(msg["content"])
        if at < 0:  # the template rewrote the content (e.g. trimmed it): learn the whole turn
            spans.append((len(before), len(before) + len(turn.rstrip())))
            continue
        start = len(before) + at
        end = start + len(msg["content"])
        # Include the token that closes the turn so the model learns to stop (eos first: it is
        # what generation stops on). In the plain fallback without eos, learn the newline.
        for tok in ([eos] if eos else []) + specials + ([] if getattr(tokenizer, "chat_template", None) else ["\n"]):
            if tok and full.startswith(tok, end):
                end += len(tok)
                break
        spans.append((start, end))
    return spans


def encode_example(tokenizer, messages: list[dict], max_len: int) -> Encoded:
    """Chat-template the conversation; labels only on assistant contents and their end-of-turn token."""
    messages = [{"role": m["role"], "content": neutralise(tokenizer, m["content"])} for m in messages]
    full = _render(tokenizer, messages)
    spans = _assistant_spans(tokenizer, messages, full)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        # A token is trained on when its characters overlap an assistant span (empty-offset tokens never).
        inside = [any(a < end and b > start for start, end in spans) and b > a for a, b in offsets]
    else:  # slow tokenizer: no offsets, so count the tokens of each text prefix instead
        count = lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
        ids = list(tokenizer(full, add_special_tokens=False)["input_ids"])
        inside = [False] * len(ids)
        for start, end in spans:
            for i in range(count(full[:start]), min(count(full[:end]), len(ids))):
                inside[i] = True
    labels = [tok if keep else -100 for tok, keep in zip(ids, inside)]
    truncated = len(ids) > max_len
    return Encoded(input_ids=ids[:max_len], labels=labels[:max_len], truncated=truncated)


def encode_dataset(tokenizer, rows: list[dict], max_len: int) -> tuple[list[Encoded], int]:
    """Encode rows; return (examples, how many were truncated).

    Examples whose assistant tokens were all cut off are dropped: a batch of them has no
    loss tokens and the mean loss would be NaN. They still count as truncated.
    """
    encoded, truncated = [], 0
    for row in rows:
        enc = encode_example(tokenizer, row["messages"], max_len)
        truncated += enc.truncated
        if any(label != -100 for label in enc.labels):
            encoded.append(enc)
    if rows and not encoded:
        raise ExplorerError(f"Every example lost its whole reply to truncation at {max_len} tokens; "
                            "raise the sequence length.")
    return encoded, truncated


def collate(batch: list[Encoded], pad_id: int) -> dict:
    """Right-pad a batch into tensors; padding gets attention 0 and label -100."""
    import torch

    if not batch:
        raise ValueError("collate needs at least one example")
    width = max(len(e.input_ids) for e in batch)
    pad = lambda seq, value: list(seq) + [value] * (width - len(seq))  # noqa: E731
    return {"input_ids": torch.tensor([pad(e.input_ids, pad_id) for e in batch], dtype=torch.long),
            "attention_mask": torch.tensor([pad([1] * len(e.input_ids), 0) for e in batch], dtype=torch.long),
            "labels": torch.tensor([pad(e.labels, -100) for e in batch], dtype=torch.long)}


def prompt_ids(tokenizer, user_text: str) -> list[int]:
    """Token ids of one user turn plus the generation prompt, with special tokens neutralised."""
    text = _render(tokenizer, [{"role": "user", "content": neutralise(tokenizer, user_text)}],
                   generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])

