"""Uploaded files as tables of records: CSV, TSV, JSONL, a JSON array, Excel (.xlsx) and Parquet.

This module only reads: each record is a {column: value} dict with the line (or spreadsheet row) it came from;
which column means what is explorer.data.shapes' business. Well-kept readers do the parsing: Python's csv and
json modules (they give the line numbers that the row-by-row reasons quote), openpyxl for Excel and pyarrow for
Parquet (both pinned in requirements.txt). The upload limits (EXPLORER_MAX_UPLOAD_MB, EXPLORER_MAX_UPLOAD_ROWS)
are checked here once for every caller, and a compressed file is never unpacked beyond a fixed multiple of
them: a zip bomb named .xlsx is refused from its directory before openpyxl inflates anything. openpyxl parses the
sheets' XML with Python's expat (no lxml here), whose amplification limit (expat 2.4 and later; 2.5.0 in this
venv) refuses entity bombs ("billion laughs"); formulas are never evaluated (data_only: the values Excel saved).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import settings
from ..errors import ExplorerError

# An .xlsx is a zip of XML and a Parquet file holds compressed column chunks: both may unpack to far more
# than they weigh. Text compresses about 5-10x; 25x the upload limit (125 MB at the default 5 MB) leaves
# room for any honest spreadsheet and refuses a bomb before it is inflated.
UNPACK_FACTOR = 25
TEXT_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
BINARY_KINDS = {".xlsx": "xlsx", ".parquet": "parquet"}
KIND_NAMES = {"jsonl": "JSONL", "json": "JSON", "csv": "CSV", "tsv": "TSV", "xlsx": "Excel", "parquet": "Parquet"}
MAX_COLUMNS = 1000
READABLE = "JSONL, JSON, CSV, TSV, Excel (.xlsx) or Parquet"


@dataclass
class RowError:
    """Why one row was skipped; line is 1-based (the CSV header is line 1)."""

    line: int
    reason: str


@dataclass
class Table:
    """A file's records in order, the columns they use (as written, in first-seen order), and the records that
    could not be read at all (a JSONL line that is not a JSON object)."""

    source: str
    kind: str                                    # a key of KIND_NAMES
    columns: list[str]
    records: list[tuple[int, dict]]
    errors: list[RowError] = field(default_factory=list)

    @property
    def cells_are_text(self) -> bool:
        """CSV, TSV, Excel and Parquet cells are text: a "messages" cell there holds JSON text to decode."""
        return self.kind not in ("jsonl", "json")

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]


def _check_rows(count: int) -> None:
    max_rows = settings.max_upload_rows()
    if count > max_rows:
        raise ExplorerError(f"Too many rows ({count:,}); the limit is {max_rows:,} (EXPLORER_MAX_UPLOAD_ROWS).")


def _check_columns(columns: list, source: str) -> list:
    """Refuse a table wider than anyone's training data (each column becomes a choice in the column picker)."""
    if len(columns) > MAX_COLUMNS:
        raise ExplorerError(f"{source} has {len(columns):,} columns; training data has a few (the limit is "
                            f"{MAX_COLUMNS:,}). Is it the right file?")
    return columns


def _unpack_limit() -> int:
    return UNPACK_FACTOR * settings.max_upload_bytes()


# --------------------------------------------------------------------------- text files


def json_object(line: str) -> dict:
    """One JSONL line as an object, or ValueError with a short reason."""
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


def _columns_of(records: list[tuple[int, dict]]) -> list[str]:
    return list(dict.fromkeys(key for _, obj in records for key in obj))


def _jsonl(text: str, source: str) -> Table:
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and friends, which
    # splitlines() would break on, shifting every line number after them.
    lines = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    _check_rows(len(lines))
    table = Table(source, "jsonl", [], [])
    for number, line in lines:
        try:
            table.records.append((number, json_object(line)))
        except ValueError as exc:
            table.errors.append(RowError(number, str(exc)))
    table.columns = _check_columns(_columns_of(table.records), source)
    return table


def _json_array(text: str, source: str) -> Table:
    """A JSON array of objects; each keeps the line its object starts on (found by decoding item by item)."""
    decoder = json.JSONDecoder()
    at = text.index("[") + 1
    records, errors, item = [], [], 0
    try:
        while True:
            while at < len(text) and text[at] in " \t\r\n,":
                at += 1
            if at >= len(text):
                raise ExplorerError(f"{source}: the JSON array is not closed with ].")
            if text[at] == "]":
                break
            line = text.count("\n", 0, at) + 1
            obj, at = decoder.raw_decode(text, at)
            item += 1
            _check_rows(item)
            if isinstance(obj, dict):
                records.append((line, obj))
            else:
                errors.append(RowError(line, f"not a JSON object (got {type(obj).__name__})"))
    except json.JSONDecodeError as exc:
        raise ExplorerError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    except RecursionError:
        raise ExplorerError(f"{source}: JSON nested too deeply.") from None
    except ValueError:  # Python's limit on an integer's digits
        raise ExplorerError(f"{source} is not valid JSON (a number has too many digits).") from None
    if text[at + 1:].strip():
        raise ExplorerError(f"{source}: text after the JSON array's closing ] (line {text.count(chr(10), 0, at) + 1}).")
    return Table(source, "json", _check_columns(_columns_of(records), source), records, errors)


def _delimited(text: str, source: str, kind: str) -> Table:
    """CSV or TSV: the first record is the header; a quoted field may span lines, so each record keeps the
    line it starts on."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if kind == "tsv" else ",")
    name = KIND_NAMES[kind]
    try:
        header = [cell.strip() for cell in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise ExplorerError(f"Could not read the {name} header: {exc}") from None
    header = _check_columns([cell or f"column {i}" for i, cell in enumerate(header, 1)], source)
    records = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field over csv's own size limit; the reader cannot resume
            raise ExplorerError(f"{name} error at line {start}: {exc}") from None
        if any(cell.strip() for cell in cells):
            records.append((start, cells))
            _check_rows(len(records))
    # A short record lacks its last cells (None).
    first = _first_columns(header)
    rows = [(line, {c: cells[i] if i < len(cells) else None for c, i in first.items()}) for line, cells in records]
    return Table(source, kind, list(first), rows)


def _first_columns(header: list[str]) -> dict[str, int]:
    """{column: its index}, in header order; a repeated name keeps its first column."""
    first: dict[str, int] = {}
    for i, column in enumerate(header):
        first.setdefault(column, i)
    return first


def _text_kind(text: str, suffix: str) -> str:
    if suffix in TEXT_KINDS:
        kind = TEXT_KINDS[suffix]
        if kind == "json" and not text.lstrip().startswith("["):
            return "jsonl"  # a .json file of one object per line
        return kind
    start = text.lstrip()[:1]
    if start in "{[":
        return "json" if start == "[" else "jsonl"
    header = text.lstrip().split("\n", 1)[0]
    return "tsv" if "\t" in header and "," not in header else "csv"


def read_text(text: str, source: str, suffix: str = "") -> Table:
    """Text (a decoded upload or pasted rows) as a table; ``suffix`` picks the format, else it is sniffed."""
    text = text.lstrip("\ufeff")  # Excel and Notepad write a BOM
    if not text.strip():
        raise ExplorerError(f"{source} is empty.")
    if "\x00" in text:
        raise ExplorerError(f"{source} contains NUL bytes: it looks like a binary file, not {READABLE} text.")
    kind = _text_kind(text, suffix)
    if kind == "jsonl":
        first = next((line for line in text.split("\n") if line.strip()), "")
        if first.lstrip().startswith("["):  # an array in a .jsonl file is still an array
            kind = "json"
    if kind == "json":
        return _json_array(text, source)
    return _jsonl(text, source) if kind == "jsonl" else _delimited(text, source, kind)


# --------------------------------------------------------------------------- spreadsheets and Parquet


def cell_text(value) -> str | None:
    """A spreadsheet or Parquet cell as text: numbers as written (7, not 7.0), dates as ISO dates, lists and
    objects (a "messages" column in Parquet) unchanged, blanks as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, dict, str)):
        return value
    return str(value)


def _excel(data: bytes, source: str) -> Table:
    import zipfile

    import openpyxl

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise ExplorerError(f"{source} is not an Excel workbook (.xlsx is a zip file; this one is not). Save it "
                            "from Excel as .xlsx or CSV.") from None
    if unpacked > _unpack_limit():
        raise ExplorerError(f"{source} unpacks to {unpacked:,} bytes (the limit is {_unpack_limit():,}, "
                            f"{UNPACK_FACTOR}x EXPLORER_MAX_UPLOAD_MB); save it as CSV.")
    try:  # data_only: the values Excel saved for formulas; nothing is evaluated
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises KeyError, InvalidFileException, XML errors...
        raise ExplorerError(f"{source} could not be read as an Excel workbook ({type(exc).__name__}: "
                            f"{str(exc)[:200]}).") from None
    try:
        sheet = book.worksheets[0]
        rows = sheet.iter_rows(values_only=True)
        header = [cell_text(cell) for cell in next(rows, ())]
        if not any(header):
            raise ExplorerError(f"{source}: the first sheet's first row is empty; it should name the columns.")
        columns = _check_columns([str(cell).strip() if cell else f"column {i}" for i, cell in enumerate(header, 1)],
                                 source)
        first = _first_columns(columns)
        records = []
        for number, cells in enumerate(rows, 2):  # spreadsheet row numbers: the header is row 1
            values = [cell_text(cell) for cell in cells]
            if any(v is not None and str(v).strip() for v in values):
                records.append((number, {c: values[i] if i < len(values) else None for c, i in first.items()}))
                _check_rows(len(records))
    finally:
        book.close()
    return Table(source, "xlsx", list(first), records)


def _parquet(data: bytes, source: str) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not (data.startswith(b"PAR1") and data.endswith(b"PAR1")):
        raise ExplorerError(f"{source} is not a Parquet file (it lacks Parquet's PAR1 markers).")
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        meta = parquet.metadata
        _check_rows(meta.num_rows)
        unpacked = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if unpacked > _unpack_limit():
            raise ExplorerError(f"{source} unpacks to {unpacked:,} bytes (the limit is {_unpack_limit():,}, "
                                f"{UNPACK_FACTOR}x EXPLORER_MAX_UPLOAD_MB).")
        columns = _check_columns(list(parquet.schema_arrow.names), source)
        rows = parquet.read().to_pylist()
    except ExplorerError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError... for a damaged file
        raise ExplorerError(f"{source} could not be read as Parquet ({type(exc).__name__}: {str(exc)[:200]}).") from None
    records = [(number, {c: cell_text(row.get(c)) for c in columns}) for number, row in enumerate(rows, 1)]
    records = [(n, r) for n, r in records if any(v is not None and str(v).strip() for v in r.values())]
    return Table(source, "parquet", columns, records)


# --------------------------------------------------------------------------- any upload


def read_bytes(data: bytes, filename: str) -> Table:
    """An uploaded file as a table: its format from its suffix (else sniffed), every limit checked first."""
    name = Path(filename or "upload").name
    limit = settings.max_upload_bytes()
    if len(data) > limit:
        raise ExplorerError(f"{name} is {len(data):,} bytes; the limit is {limit:,} (EXPLORER_MAX_UPLOAD_MB).")
    if not data.strip():
        raise ExplorerError(f"{name} is empty.")
    suffix = Path(name).suffix.lower()
    if suffix in BINARY_KINDS:
        return _excel(data, name) if BINARY_KINDS[suffix] == "xlsx" else _parquet(data, name)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Windows "Unicode" (UTF-16) text: NUL-riddled, not binary
        raise ExplorerError(f"{name} is UTF-16 text; save it as UTF-8 and upload again.")
    if data.startswith(b"PK\x03\x04") or b"\x00" in data:
        raise ExplorerError(f"{name} looks like a zip or binary file; upload {READABLE} (an Excel or Parquet file "
                            "needs its .xlsx or .parquet name).")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExplorerError(f"{name} is not UTF-8 text (invalid byte at offset {exc.start}). "
                            "Save it as UTF-8 and upload again.") from None
    return read_text(text, name, suffix)
