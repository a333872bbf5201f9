"""Uploaded and pasted training data: parse JSONL/CSV row by row, and preview it safely.

Chat rows everywhere are {"messages": [{"role": ..., "content": ...}, ...]} like the bundled tasks; a
``FlatFormat`` (explorer.data.labelled) reads the feature-extraction rows, labelled text and pairs, the same way.
Every row that cannot be used is reported with its line and reason; the upload limits
(EXPLORER_MAX_UPLOAD_MB, EXPLORER_MAX_UPLOAD_ROWS) are checked here, once, for every caller.
No gradio here: the UI and the trainer both call these functions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import settings
from ..errors import ExplorerError

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


@dataclass(frozen=True)
class FlatFormat:
    """Rows of plain text fields, e.g. labelled text {"text", "label"} or pairs {"a", "b"} (explorer.data.labelled
    defines them): the same JSON objects or CSV columns, each row checked by ``check``."""

    kind: str                        # "labelled" or "pairs"
    fields: tuple                    # JSON keys and CSV columns, e.g. ("text", "label")
    check: Callable                  # {field: raw value or None} -> the row; ValueError with the reason


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


def _json_object(line: str) -> dict:
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
    return obj


def _json_row(line: str) -> dict:
    obj = _json_object(line)
    if "messages" in obj:
        return {"messages": _check_messages(obj["messages"])}
    return {"messages": _pair(obj.get("prompt"), obj.get("response"))}


def _jsonl_records(text: str, fmt: FlatFormat | None = None):
    """(line number, line) for non-blank lines, and the function that turns one into a row."""
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and friends, which
    # splitlines() would break on, shifting every line number after them.
    records = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if records and records[0][1].lstrip().startswith("["):
        # A JSON array would otherwise produce one confusing "not JSON" error per line.
        raise ExplorerError("This looks like a JSON array. Save one JSON object per line (JSONL) instead.")
    if fmt is None:
        return records, _json_row
    return records, lambda line: fmt.check({name: _json_object(line).get(name) for name in fmt.fields})


def _csv_records(text: str, fmt: FlatFormat | None = None):
    """(starting line number, cells) per non-empty CSV record, and the function that makes a row."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise ExplorerError(f"Could not read the CSV header: {exc}") from None
    names = fmt.fields if fmt else ("prompt", "response", "messages")
    col = {name: header.index(name) if name in header else None for name in names}
    if fmt and None in col.values():
        raise ExplorerError(f"The CSV header needs {' and '.join(fmt.fields)} columns; "
                            f"found: {', '.join(header)[:200] or 'nothing'}.")
    if not fmt and col["messages"] is None and None in (col["prompt"], col["response"]):
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

    def make(record: list[str]) -> dict:
        get = lambda name: record[col[name]] if col[name] < len(record) else None  # noqa: E731
        if fmt:
            return fmt.check({name: get(name) for name in fmt.fields})
        return {"messages": messages_of(get)}

    def messages_of(get) -> list[dict]:
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


def _parse_text(text: str, kind: str, source: str, fmt: FlatFormat | None = None) -> ParsedData:
    text = text.lstrip("\ufeff")  # Excel and Notepad write a BOM
    if not text.strip():
        raise ExplorerError(f"{source} is empty.")
    if "\x00" in text:
        raise ExplorerError(f"{source} contains NUL bytes: it looks like a binary file, not JSONL or CSV.")
    if kind == "sniff":
        kind = "jsonl" if text.lstrip()[:1] in "{[" else "csv"
    records, make = _jsonl_records(text, fmt) if kind == "jsonl" else _csv_records(text, fmt)
    max_rows = settings.max_upload_rows()
    if len(records) > max_rows:
        raise ExplorerError(f"Too many rows ({len(records):,}); the limit is {max_rows:,} "
                            "(EXPLORER_MAX_UPLOAD_ROWS).")
    parsed = ParsedData(rows=[], errors=[], source=source)
    for line, record in records:
        try:
            row = make(record)
        except ValueError as exc:
            parsed.errors.append(RowError(line, str(exc)))
            continue
        parsed.rows.append(row)
        parsed.lines.append(line)
    if not parsed.rows:
        shown = "; ".join(f"line {e.line}: {e.reason}" for e in parsed.errors[:5])
        raise ExplorerError(f"No valid rows in {source} ({kind.upper()}). {shown or 'No data rows found.'}")
    return parsed


def parse_upload(data: bytes, filename: str, fmt: FlatFormat | None = None) -> ParsedData:
    """Parse an uploaded JSONL/CSV file of chat rows (or of ``fmt``'s rows); raise ExplorerError if the whole file
    is unusable."""
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
    return _parse_text(text, kind, name, fmt)


def parse_pasted(text: str, fmt: FlatFormat | None = None) -> ParsedData:
    """Parse text pasted in a box: JSONL if it starts with "{", else CSV."""
    size = len((text or "").encode("utf-8", "replace"))
    limit = settings.max_upload_bytes()
    if size > limit:
        raise ExplorerError(f"The pasted text is {size:,} bytes; the limit is {limit:,} (EXPLORER_MAX_UPLOAD_MB).")
    return _parse_text(text or "", "sniff", "pasted text", fmt)


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
    if parsed.rows and "messages" not in parsed.rows[0]:  # labelled text or pairs: their own fields
        fields = list(parsed.rows[0])
        return pd.DataFrame([[line] + [safe_cell(row[f], max_chars) for f in fields]
                             for line, row in zip(lines, parsed.rows[:limit])], columns=["line", *fields])
    records = [(line, first(row["messages"], "user"), first(row["messages"][::-1], "assistant"))
               for line, row in zip(lines, parsed.rows[:limit])]
    return pd.DataFrame(records, columns=["line", "user", "assistant"])


def errors_table(parsed: ParsedData):
    """The rejected rows as a DataFrame: line, reason (reasons may quote user text, so made safe)."""
    import pandas as pd

    return pd.DataFrame([{"line": e.line, "reason": safe_cell(e.reason)} for e in parsed.errors],
                        columns=["line", "reason"])


# --------------------------------------------------------------------------- keeping an upload for training


def safe_stem(name: str) -> str:
    """A file name's stem reduced to letters, digits, '-', '_' and '.', at most 60 characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name or "").stem).strip("-.")
    return stem[:60] or "upload"


def keep_for_training(parsed: ParsedData, folder: Path) -> Path:
    """Save the valid rows as JSONL in ``folder/<hash>/<file name>.jsonl`` (the worker reads one format,
    whatever was uploaded; the run shows the name the file had). Written under a temporary name and
    moved into place, so a half-written file never looks like data."""
    content = "\n".join(json.dumps(row, ensure_ascii=False) for row in parsed.rows).encode("utf-8")
    target_dir = folder / hashlib.sha256(content).hexdigest()[:16]
    target = target_dir / f"{safe_stem(parsed.source)}.jsonl"
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".tmp-", suffix=".jsonl")
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, target)
    except OSError as error:
        raise ExplorerError(f"Could not keep the uploaded rows in {target_dir}: {error.strerror or error}.") from None
    return target
