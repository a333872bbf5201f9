"""Uploaded and pasted training data: read a file of any common shape into rows, and preview it safely.

Chat rows everywhere are {"messages": [{"role": ..., "content": ...}, ...]} like the bundled tasks; a
``FlatFormat`` (explorer.data.labelled) reads the feature-extraction rows, labelled text and pairs, the same way.
explorer.data.tables reads the file (CSV, TSV, JSONL, a JSON array, Excel, Parquet; the upload limits are
checked there), explorer.data.shapes says which column means what (recognised, or a mapping such as
``prompt=Question,response=Answer``). Every row that cannot be used is reported with its line and reason.
No gradio here: the UI, the CLI and the trainer all call these functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import settings
from ..errors import ExplorerError
from . import shapes, tables
from .shapes import MAX_FIELD_CHARS, ROLES  # noqa: F401 - re-exported: labelled.py and tests read them here
from .tables import RowError

# The upload limits are hosting settings, read at call time: data.MAX_UPLOAD_BYTES is
# settings.max_upload_bytes() (EXPLORER_MAX_UPLOAD_MB, default 5 MB) and data.MAX_ROWS is
# settings.max_upload_rows() (EXPLORER_MAX_UPLOAD_ROWS, default 20,000), for every caller.
_LIMITS = {"MAX_UPLOAD_BYTES": settings.max_upload_bytes, "MAX_ROWS": settings.max_upload_rows}


def __getattr__(name: str):
    if name in _LIMITS:
        return _LIMITS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class FlatFormat:
    """Rows of plain text fields, e.g. labelled text {"text", "label"} or pairs {"a", "b"} (explorer.data.labelled
    defines them): the same JSON objects or CSV columns, each row checked by ``check``."""

    kind: str                        # "labelled" or "pairs"
    fields: tuple                    # JSON keys and CSV columns, e.g. ("text", "label")
    check: Callable                  # {field: raw value or None} -> the row; ValueError with the reason


@dataclass
class ParsedData:
    """Valid rows (messages format, or a FlatFormat's), the rejected rows, and where they came from."""

    rows: list[dict]
    errors: list[RowError]
    source: str
    lines: list[int] = field(default_factory=list)  # line of each valid row, for the preview
    columns: dict = field(default_factory=dict)     # {part: the file's column} the rows were read through
    file_columns: list = field(default_factory=list)  # every column the file has, for the column picker
    picked: bool = False                            # the columns were given (picked), not recognised
    file_kind: str = ""                             # "CSV", "Excel", ... (explorer.data.tables.KIND_NAMES)


# --------------------------------------------------------------------------- parsing


def unrecognised(table: tables.Table, kind: str) -> ExplorerError:
    """The columns of ``table`` are of no known shape: say which are needed, and that they can be picked."""
    found = ", ".join(table.columns)[:200] or "nothing"
    what = "header" if table.cells_are_text else "rows"
    if kind == "chat":
        return ExplorerError(f"The {table.kind_name} {what} needs prompt and response columns (or question/answer, "
                             "input/output, instruction/input/output, messages, conversations), or pick which column "
                             "is the user's turn and which the answer (the command line's --columns prompt=COLUMN,"
                             f"response=COLUMN); found: {found}.")
    return ExplorerError(f"The {table.kind_name} {what} needs {' and '.join(shapes.PARTS[kind])} columns, or "
                         f"pick them (--columns {','.join(p + '=COLUMN' for p in shapes.PARTS[kind])}); found: {found}.")


def parse_table(table: tables.Table, fmt: FlatFormat | None = None, columns: str | dict | None = None,
                who: str = "") -> ParsedData:
    """The rows of a table, through ``columns`` (a mapping: ``prompt=Question,response=Answer`` or a dict) or
    else the shape its columns are recognised as. A file of another kind than ``fmt``'s (chat when None) is
    refused in one line naming the method that takes it (``who``: the method that was picked)."""
    kind = fmt.kind if fmt else "chat"
    source = table.source
    mapping = shapes.parse_mapping(columns, kind) if isinstance(columns, str) or columns is None else dict(columns)
    if mapping:
        mapping = shapes.resolve(mapping, table.columns, kind, source)
    elif table.records:
        found = shapes.recognise(table.columns, prefer=kind)
        if found is None:
            raise unrecognised(table, kind)
        if found[0] != kind:
            raise shapes.wrong_kind(found[0], found[1], kind, source, who)
        mapping = found[1]
    per_row = kind == "chat" and not columns and not table.cells_are_text
    parsed = ParsedData(rows=[], errors=list(table.errors), source=source, columns=mapping,
                        file_columns=list(table.columns), picked=bool(columns), file_kind=table.kind_name)
    for line, record in table.records:
        try:
            if fmt:
                row = shapes.flat_row(record, mapping, fmt.check)
            else:
                row_columns = shapes.row_columns(list(record), mapping) if per_row else mapping
                hint = shapes.DEFAULT_HINT if not columns and row_columns.get("prompt") == "prompt" and \
                    row_columns.get("response") == "response" else ""
                row = shapes.chat_row(record, row_columns, table.cells_are_text, hint)
        except ValueError as exc:
            parsed.errors.append(RowError(line, str(exc)))
            continue
        parsed.rows.append(row)
        parsed.lines.append(line)
    parsed.errors.sort(key=lambda e: e.line)
    if not parsed.rows:
        shown = "; ".join(f"line {e.line}: {e.reason}" for e in parsed.errors[:5])
        raise ExplorerError(f"No valid rows in {source} ({table.kind_name.upper()}). "
                            f"{shown or 'No data rows found.'}")
    return parsed


def parse_upload(data: bytes, filename: str, fmt: FlatFormat | None = None, columns: str | dict | None = None,
                 who: str = "") -> ParsedData:
    """Parse an uploaded file (CSV, TSV, JSONL, JSON array, .xlsx, .parquet) of chat rows (or of ``fmt``'s rows)
    through ``columns`` or its recognised shape; raise ExplorerError if the whole file is unusable."""
    return parse_table(tables.read_bytes(data, filename), fmt, columns, who)


def read_pasted(text: str) -> tables.Table:
    """Text pasted in a box as a table: JSON if it starts with "{" or "[", TSV if its header has tabs, else CSV."""
    size = len((text or "").encode("utf-8", "replace"))
    limit = settings.max_upload_bytes()
    if size > limit:
        raise ExplorerError(f"The pasted text is {size:,} bytes; the limit is {limit:,} (EXPLORER_MAX_UPLOAD_MB).")
    return tables.read_text(text or "", "pasted text")


def parse_pasted(text: str, fmt: FlatFormat | None = None, columns: str | dict | None = None,
                 who: str = "") -> ParsedData:
    """Parse text pasted in a box (see read_pasted) like an upload."""
    return parse_table(read_pasted(text), fmt, columns, who)


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
    whatever was uploaded; the run shows the name the file had), and beside them ``<file name>.columns.json``:
    the columns they were read through, so the run remembers which column was the user's turn and which the
    answer. Written under temporary names and moved into place, so a half-written file never looks like data;
    rows already kept are not written again (the page keeps an upload as soon as it is checked)."""
    content = "\n".join(json.dumps(row, ensure_ascii=False) for row in parsed.rows).encode("utf-8")
    target_dir = folder / hashlib.sha256(content).hexdigest()[:16]
    target = target_dir / f"{safe_stem(parsed.source)}.jsonl"
    mapping = json.dumps({"source": parsed.source, "file_kind": parsed.file_kind, "columns": parsed.columns,
                          "picked": parsed.picked, "file_columns": parsed.file_columns}, ensure_ascii=False,
                         indent=1).encode("utf-8")
    sidecar = columns_file(target)
    try:
        for path, data in ((target, content), (sidecar, mapping)):
            if path.is_file() and path.read_bytes() == data:
                continue
            target_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".tmp-", suffix=path.suffix)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
    except OSError as error:
        raise ExplorerError(f"Could not keep the uploaded rows in {target_dir}: {error.strerror or error}.") from None
    return target


def columns_file(kept: Path) -> Path:
    return Path(kept).with_name(Path(kept).stem + ".columns.json")


def kept_columns(kept: Path | str) -> dict | None:
    """What keep_for_training remembered of a kept upload: its source name, file kind and {part: column}."""
    try:
        return json.loads(columns_file(Path(kept)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
