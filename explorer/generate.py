"""Generate one reply from a loaded model (the Models tab and the generate command; greedy)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from .data import chat
from .errors import ExplorerError

MAX_PROMPT_CHARS = 8000
MAX_NEW_TOKENS_LIMIT = 1024


@dataclass
class Generation:
    model: str
    prompt: str
    completion: str
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def check_prompt(prompt: str) -> str:
    if prompt is None or not str(prompt).strip():
        raise ExplorerError("The prompt is empty: type a question or instruction first.")
    prompt = str(prompt)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ExplorerError(f"The prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}.")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate (possible in JSON): tokenizers raise TypeError
        raise ExplorerError(f"The prompt holds an invalid character at position {error.start} "
                            "(a lone surrogate); remove it and try again.") from None
    return prompt


def check_max_new_tokens(value) -> int:
    from .options import shown

    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
        raise ExplorerError(f"max new tokens must be a whole number, got {shown(value)}.") from None
    if number != number or number in (float("inf"), float("-inf")) or number != int(number):
        raise ExplorerError(f"max new tokens must be a whole number, got {shown(value)}.")
    if not 1 <= number <= MAX_NEW_TOKENS_LIMIT:
        raise ExplorerError(f"max new tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}, got {int(number)}.")
    return int(number)


def generate(loaded, prompt: str, max_new_tokens: int = 64) -> Generation:
    """Greedy generation from a loaded model; times only the generate call."""
    import torch

    prompt = check_prompt(prompt)
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    tokenizer, model = loaded.tokenizer, loaded.model
    # The one prompt builder: the chat template (special tokens typed by the user stay text), or the
    # plain "User: …\nAssistant:" form training uses for models without one.
    input_ids = torch.tensor([chat.prompt_ids(tokenizer, prompt)], device=loaded.device)
    pad = chat.pad_id(tokenizer)
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    seconds = time.perf_counter() - start
    new_ids = output[0, input_ids.shape[1]:]
    completion = tokenizer.decode(new_ids, skip_special_tokens=True).strip()
    return Generation(loaded.entry.name, prompt, completion, int(new_ids.shape[0]), round(seconds, 4))
