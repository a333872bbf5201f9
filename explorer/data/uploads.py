"""Training data: parse uploads/pastes, preview them safely, split, tokenise with label masking.

Rows everywhere are {"messages": [{"role": ..., "content": ...}, ...]} like the bundled tasks.
No gradio here: the UI and the trainer both call these functions.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from .tasks import TASKS, load_examples

MAX_FIELD_CHARS = 20_000
# The upload limits are hosting settings, read at call time: data.MAX_UPLOAD_BYTES is
# settings.max_upload_bytes() (EXPLORER_MAX_UPLOAD_MB, default 5 MB) and data.MAX_ROWS is
# settings.max_upload_rows() (EXPLORER_MAX_UPLOAD_ROWS, default 20,000), for every caller.
_LIMITS = {"MAX_UPLOAD_BYTES": settings.max_upload_bytes, "MAX_ROWS": settings.max_upload_rows}


def __getattr__(name: str):
    if name in _LIMITS:
        return _LIMITS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
ROLES = ("system", "user", "assistant")


@dataclass
class RowError:
    """Why one row was skipped; line is 1-based (the CSV header is line 1)."""

    line: int
    reason: str


@dataclass
class ParsedData:
    """Valid rows (messages format), the rejected rows, and where they came from."""

    rows: list[dict]
    errors: list[RowError]
    source: str
    lines: list[int] = field(default_factory=list)  # line of each valid row, for the preview


# --------------------------------------------------------------------------- parsing


def _check_messages(messages: object) -> list[dict]:
    """Return a clean copy of a messages list or raise ValueError with a short reason."""
    if not isinstance(messages, list):
        raise ValueError(f'"messages" must be a list, not {type(messages).__name__}')
    if not messages:
        raise ValueError('"messages" is empty')
    clean = []
    for i, msg in enumerate(messages, 1):
        if not isinstance(msg, dict):
            raise ValueError(f"message {i} must be an object with role and content")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise ValueError(f"message {i} has unknown role {str(role)[:30]!r} (use system, user or assistant)")
        if not isinstance(content, str):
            raise ValueError(f"message {i} content must be a string, not {type(content).__name__}")
        if not content.strip():
            raise ValueError(f"message {i} ({role}) has empty content")
        if len(content) > MAX_FIELD_CHARS:
            raise ValueError(f"message {i} content is {len(content):,} characters (limit {MAX_FIELD_CHARS:,})")
        try:
            content.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate from a JSON "\ud800" escape: tokenizers reject it
            raise ValueError(f"message {i} content has an invalid character at position {exc.start} "
                             "(a lone surrogate)") from None
        if role == "system" and i != 1:
            raise ValueError(f"message {i}: a system message may only come first")
        clean.append({"role": role, "content": content})
    body = [m["role"] for m in clean if m["role"] != "system"]
    if not body or body[0] != "user":
        raise ValueError("the conversation must start with a user message (after an optional system one)")
    if body[-1] != "assistant":
        raise ValueError("the last message must be from the assistant (it is what the model learns)")
    return clean


def _pair(prompt: object, response: object) -> list[dict]:
    """Turn a prompt/response pair into messages, with per-field reasons."""
    for name, value in (("prompt", prompt), ("response", response)):
        if value is None:
            raise ValueError(f'missing field "{name}" (need "messages", or "prompt" and "response")')
        if not isinstance(value, str):
            raise ValueError(f'"{name}" must be a string, not {type(value).__name__}')
    return _check_messages([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])


def _json_row(line: str) -> list[dict]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:  # e.g. "[[[[…" thousands deep: json recurses once per level
        raise ValueError("JSON nested too deeply") from None
    except ValueError:  # not a decode error: Python's limit on an integer's digits
        raise ValueError("not valid JSON (a number has too many digits)") from None
    if not isinstance(obj, dict):
        raise ValueError(f"not a JSON object (got {type(obj).__name__})")
    if "messages" in obj:
        return _check_messages(obj["messages"])
    return _pair(obj.get("prompt"), obj.get("response"))


def _jsonl_records(text: str):
    """(line number, line) for non-blank lines, and the function that turns one into messages."""
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and friends, which
    # splitlines() would break on, shifting every line number after them.
    records = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if records and records[0][1].lstrip().startswith("["):
        # A JSON array would otherwise produce one confusing "not JSON" error per line.
        raise ExplorerError("This looks like a JSON array. Save one JSON object per line (JSONL) instead.")
    return records, _json_row


def _csv_records(text: str):
    """(starting line number, cells) per non-empty CSV record, and the function that makes messages."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise ExplorerError(f"Could not read the CSV header: {exc}") from None
    col = {name: header.index(name) if name in header else None for name in ("prompt", "response", "messages")}
    if col["messages"] is None and None in (col["prompt"], col["response"]):
        raise ExplorerError("The CSV header needs prompt and response columns (or one messages column); "
                            f"found: {', '.join(header)[:200] or 'nothing'}.")
    records = []
    while True:
        start = reader.line_num + 1  # a quoted field may span lines: report where the record starts
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field over csv's own size limit; the reader cannot resume
            raise ExplorerError(f"CSV error at line {start}: {exc}") from None
        if any(cell.strip() for cell in record):
            records.append((start, record))

    def make(record: list[str]) -> list[dict]:
        get = lambda name: record[col[name]] if col[name] < len(record) else None  # noqa: E731
        if col["messages"] is None:
            return _pair(get("prompt"), get("response"))
        if not (get("messages") or "").strip():
            raise ValueError('missing field "messages"')
        try:
            messages = json.loads(get("messages"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"messages cell is not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise ValueError("messages cell is JSON nested too deeply") from None
        except ValueError:  # Python's limit on an integer's digits
            raise ValueError("messages cell is not valid JSON (a number has too many digits)") from None
        return _check_messages(messages)

    return records, make


def _parse_text(text: str, kind: str, source: str) -> ParsedData:
    text = text.lstrip("\ufeff")  # Excel and Notepad write a BOM
    if not text.strip():
        raise ExplorerError(f"{source} is empty.")
    if "\x00" in text:
        raise ExplorerError(f"{source} contains NUL bytes: it looks like a binary file, not JSONL or CSV.")
    if kind == "sniff":
        kind = "jsonl" if text.lstrip()[:1] in "{[" else "csv"
    records, make = _jsonl_records(text) if kind == "jsonl" else _csv_records(text)
    max_rows = settings.max_upload_rows()
    if len(records) > max_rows:
        raise ExplorerError(f"Too many rows ({len(records):,}); the limit is {max_rows:,} "
                            "(EXPLORER_MAX_UPLOAD_ROWS).")
    parsed = ParsedData(rows=[], errors=[], source=source)
    for line, record in records:
        try:
            messages = make(record)
        except ValueError as exc:
            parsed.errors.append(RowError(line, str(exc)))
            continue
        parsed.rows.append({"messages": messages})
        parsed.lines.append(line)
    if not parsed.rows:
        shown = "; ".join(f"line {e.line}: {e.reason}" for e in parsed.errors[:5])
        raise ExplorerError(f"No valid rows in {source} ({kind.upper()}). {shown or 'No data rows found.'}")
    return parsed


def parse_upload(data: bytes, filename: str) -> ParsedData:
    """Parse an uploaded JSONL/CSV file; raise ExplorerError if the whole file is unusable."""
    name = Path(filename or "upload").name
    limit = settings.max_upload_bytes()
    if len(data) > limit:
        raise ExplorerError(f"{name} is {len(data):,} bytes; the limit is {limit:,} (EXPLORER_MAX_UPLOAD_MB).")
    if not data.strip():
        raise ExplorerError(f"{name} is empty.")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Windows "Unicode" (UTF-16) text: NUL-riddled, not binary
        raise ExplorerError(f"{name} is UTF-16 text; save it as UTF-8 and upload again.")
    if data.startswith(b"PK\x03\x04") or b"\x00" in data:
        raise ExplorerError(f"{name} looks like a zip or binary file; upload plain-text JSONL or CSV.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExplorerError(f"{name} is not UTF-8 text (invalid byte at offset {exc.start}). "
                            "Save it as UTF-8 and upload again.") from None
    suffix = Path(name).suffix.lower()
    kind = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(suffix, "sniff")
    return _parse_text(text, kind, name)


def parse_pasted(text: str) -> ParsedData:
    """Parse text pasted in a box: JSONL if it starts with "{", else CSV."""
    size = len((text or "").encode("utf-8", "replace"))
    limit = settings.max_upload_bytes()
    if size > limit:
        raise ExplorerError(f"The pasted text is {size:,} bytes; the limit is {limit:,} (EXPLORER_MAX_UPLOAD_MB).")
    return _parse_text(text or "", "sniff", "pasted text")


# --------------------------------------------------------------------------- previews


def safe_cell(text: object, max_chars: int | None = None) -> str:
    """Text for a table cell that a spreadsheet will not run as a formula (prefix a quote)."""
    text = "" if text is None else str(text)
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars] + "…"
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def preview_table(parsed: ParsedData, limit: int = 20, max_chars: int = 300):
    """First `limit` valid rows as a DataFrame: line, user (first user turn), assistant (last reply)."""
    import pandas as pd

    def first(msgs: list[dict], role: str) -> str:
        return safe_cell(next((m["content"] for m in msgs if m["role"] == role), ""), max_chars)

    lines = parsed.lines or list(range(1, len(parsed.rows) + 1))  # rows built in code have no lines
    records = [(line, first(row["messages"], "user"), first(row["messages"][::-1], "assistant"))
               for line, row in zip(lines, parsed.rows[:limit])]
    return pd.DataFrame(records, columns=["line", "user", "assistant"])


def errors_table(parsed: ParsedData):
    """The rejected rows as a DataFrame: line, reason (reasons may quote user text, so made safe)."""
    import pandas as pd

    return pd.DataFrame([{"line": e.line, "reason": safe_cell(e.reason)} for e in parsed.errors],
                        columns=["line", "reason"])


# --------------------------------------------------------------------------- datasets


def load_dataset(name_or_rows) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) for a bundled task name, an uploaded file path, ParsedData or rows.

    Uploaded data keeps its order: the last 10% (1 to 50 rows) is held out, so reruns match.
    """
    if isinstance(name_or_rows, (str, Path)):
        if str(name_or_rows) in TASKS:
            return load_examples(str(name_or_rows), "train"), load_examples(str(name_or_rows), "heldout")
        path = Path(name_or_rows)
        if not path.is_file():
            raise ExplorerError(f"Unknown dataset {str(name_or_rows)!r}: choose one of {', '.join(TASKS)} "
                                "or upload a JSONL/CSV file.")
        limit = settings.max_upload_bytes()
        if path.stat().st_size > limit:
            raise ExplorerError(f"{path.name} is larger than {limit:,} bytes (EXPLORER_MAX_UPLOAD_MB).")
        name_or_rows = parse_upload(path.read_bytes(), path.name)
    rows = list(name_or_rows.rows if isinstance(name_or_rows, ParsedData) else name_or_rows)
    if len(rows) < 2:
        raise ExplorerError("Need at least 2 valid rows: one to train on and one held out to evaluate.")
    held = max(1, min(50, len(rows) // 10))
    return rows[:-held], rows[-held:]


# --------------------------------------------------------------------------- tokenisation


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


def _neutralise(tokenizer, text: str) -> str:
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
    messages = [{"role": m["role"], "content": _neutralise(tokenizer, m["content"])} for m in messages]
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
    text = _render(tokenizer, [{"role": "user", "content": _neutralise(tokenizer, user_text)}],
                   generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
